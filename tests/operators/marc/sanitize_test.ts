import assert from "node:assert/strict";
import {
  type DataField,
  type MarcField,
  type MarcRecord,
  sanitizeRecord,
} from "../../../operators/marc/mod.ts";

function df(tag: string, ind1: string, ...pairs: string[]): DataField {
  const subfields = [];
  for (let i = 0; i < pairs.length; i += 2) {
    subfields.push({ code: pairs[i]!, value: pairs[i + 1]! });
  }
  return { tag, ind1, ind2: " ", subfields };
}

function record(): MarcRecord {
  return {
    leader: "00000nam a2200000 i 4500",
    fields: [
      { tag: "001", value: "b1" },
      df("245", "1", "a", "Title"),
      df("541", "0", "a", "Private donor"),
      df("541", "1", "a", "Public donor"),
      df("561", "0", "a", "Private provenance"),
      df("583", "0", "a", "private action"),
      df("583", "1", "a", "public action", "x", "staff note"),
      df("590", " ", "a", "Local note"),
      df("852", "0", "a", "CRL", "h", "PS8000", "p", "39999000000017", "x", "staff"),
      df("852", "0", "p", "39999000000025"),
      df("876", " ", "p", "39999000000033"),
      df("877", " ", "a", "x"),
      df("878", " ", "a", "x"),
      df("945", " ", "i", "39999000000041"),
      df("949", " ", "i", "39999000000058"),
      df("952", " ", "p", "39999000000066"),
      df("952", " ", "p", "39999000000074"),
      df("900", " ", "a", "local"),
      df("999", " ", "c", "1"),
    ],
  };
}

const tags = (fields: MarcField[]) => fields.map((f) => f.tag);

Deno.test("default rules drop local, item and private fields and count per tag", () => {
  const input = record();
  const before = structuredClone(input);
  const { record: out, stripped } = sanitizeRecord(input);
  assert.deepEqual(tags(out.fields), ["001", "245", "541", "583", "590", "852"]);
  assert.deepEqual(stripped, {
    "541": 1,
    "561": 1,
    "583": 2,
    "852": 2,
    "876": 1,
    "877": 1,
    "878": 1,
    "945": 1,
    "949": 1,
    "952": 2,
    "900": 1,
    "999": 1,
  });
  const f852 = out.fields.find((f) => f.tag === "852") as DataField;
  assert.deepEqual(f852.subfields.map((s) => s.code), ["a", "h"]);
  const f583 = out.fields.find((f) => f.tag === "583") as DataField;
  assert.deepEqual(f583.subfields, [{ code: "a", value: "public action" }]);
  assert.deepEqual(input, before, "input must not be modified");
  assert.ok(!JSON.stringify(out).includes("39999"), "no barcode survives");
});

Deno.test("drop590, keepLocalTags, extra tags, subfields and predicates", () => {
  const { record: out, stripped } = sanitizeRecord(record(), {
    drop590: true,
    keepLocalTags: ["900", "952"],
    dropTags: ["541"],
    extraDropSubfields: { "245": ["a"] },
    dropField: (f) => f.tag === "001",
  });
  // 952 is an item tag: dropped even when listed in keepLocalTags.
  assert.deepEqual(tags(out.fields), ["583", "852", "900"]);
  assert.equal(stripped["590"], 1);
  assert.equal(stripped["541"], 2);
  assert.equal(stripped["245"], 1);
  assert.equal(stripped["001"], 1);
  assert.equal(stripped["952"], 2);
  assert.equal(stripped["900"], undefined);
});

Deno.test("rules can be relaxed: local fields kept when dropLocalFields is false", () => {
  const { record: out, stripped } = sanitizeRecord(record(), {
    dropLocalFields: false,
    itemTags: [],
    dropSubfields: {},
    privateWhenInd1Zero: [],
  });
  assert.equal(out.fields.length, record().fields.length);
  assert.deepEqual(stripped, {});
});
