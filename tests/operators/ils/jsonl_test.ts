import assert from "node:assert/strict";
import { z } from "zod";
import { JsonlError, readJsonl, writeJsonl } from "../../../operators/ils/jsonl.ts";

const SENTINEL = "Sentinel-Value-a71d";

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

Deno.test("readJsonl reports broken lines by number without their content", async () => {
  const input = [
    '{"id":1,"name":"Zoë"}\r\n',
    "\n",
    `{"id":2,"name":"${SENTINEL}"\n`,
    `[1,"${SENTINEL}"]\n`,
    `"${SENTINEL}"\n`,
    '{"id":3}',
  ];
  const rows = await collect(readJsonl(input));
  assert.equal(rows.length, 5);
  assert.deepEqual(rows[0], { ok: true, line: 1, record: { id: 1, name: "Zoë" } });
  assert.equal(rows[1]!.line, 3);
  assert.ok(!rows[1]!.ok && rows[1]!.reason.startsWith("Invalid JSON"));
  assert.deepEqual(rows[2], { ok: false, line: 4, reason: "Expected a JSON object, found array" });
  assert.deepEqual(rows[3], { ok: false, line: 5, reason: "Expected a JSON object, found string" });
  assert.deepEqual(rows[4], { ok: true, line: 6, record: { id: 3 } });
  for (const row of rows) if (!row.ok) assert.ok(!row.reason.includes(SENTINEL), row.reason);
});

Deno.test("readJsonl is independent of chunk boundaries and validates with a schema", async () => {
  const text = '\ufeff{"id":1,"email":"a@example.invalid"}\n{"id":"x","email":"nope"}\n{"id":3}\n';
  const bytes = new TextEncoder().encode(text);
  const schema = z.object({ id: z.number(), email: z.email().optional() });
  const expected = await collect(readJsonl([bytes], { schema }));
  assert.deepEqual(expected[0], {
    ok: true,
    line: 1,
    record: { id: 1, email: "a@example.invalid" },
  });
  assert.ok(!expected[1]!.ok);
  assert.match(expected[1]!.ok ? "" : expected[1]!.reason, /^Field "id": .*; Field "email": /);
  assert.deepEqual(expected[2], { ok: true, line: 3, record: { id: 3 } });
  for (let cut = 0; cut <= bytes.length; cut++) {
    const parts = [bytes.subarray(0, cut), bytes.subarray(cut)];
    assert.deepEqual(await collect(readJsonl(parts, { schema })), expected, `split at ${cut}`);
  }
});

Deno.test("readJsonl bounds line length and resumes on the next line", async () => {
  const long = `{"x":"${"y".repeat(3000)}"}`;
  const chunks = [
    '{"a":1}\n',
    long.slice(0, 1000),
    long.slice(1000, 2500),
    long.slice(2500) + "\n",
    '{"b":2}\n',
  ];
  assert.deepEqual(await collect(readJsonl(chunks, { maxLineChars: 1000 })), [
    { ok: true, line: 1, record: { a: 1 } },
    { ok: false, line: 2, reason: "Line exceeds 1000 characters" },
    { ok: true, line: 3, record: { b: 2 } },
  ]);
});

Deno.test("writeJsonl streams records, applies the file mode and round-trips", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/patrons.jsonl`;
    const records = async function* () {
      for (let i = 1; i <= 20_000; i++) {
        yield { id: i, big: 10n ** 20n + BigInt(i), at: new Date(Date.UTC(2024, 0, 1, 0, 0, i)) };
      }
    };
    const count = await writeJsonl(path, records(), { mode: 0o600 });
    assert.equal(count, 20_000);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    using file = await Deno.open(path);
    let n = 0;
    for await (const row of readJsonl(file.readable)) {
      assert.ok(row.ok);
      n++;
      if (n === 2) {
        assert.deepEqual(row.record, {
          id: 2,
          big: "100000000000000000002",
          at: "2024-01-01T00:00:02.000Z",
        });
      }
    }
    assert.equal(n, 20_000);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), [
      "patrons.jsonl",
    ]);

    // An existing file gets the mode too, and append adds lines.
    await Deno.writeTextFile(`${dir}/a.jsonl`, '{"n":0}\n', { mode: 0o644 });
    await Deno.chmod(`${dir}/a.jsonl`, 0o644);
    assert.equal(await writeJsonl(`${dir}/a.jsonl`, [{ n: 1 }], { append: true, mode: 0o600 }), 1);
    assert.equal(await Deno.readTextFile(`${dir}/a.jsonl`), '{"n":0}\n{"n":1}\n');
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(`${dir}/a.jsonl`)).mode! & 0o777, 0o600);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeJsonl failures leave the previous file and name only the record position", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.jsonl`;
    await Deno.writeTextFile(path, '{"old":true}\n');
    const circular: Record<string, unknown> = { secret: SENTINEL };
    circular.self = circular;
    await assert.rejects(writeJsonl(path, [{ ok: 1 }, circular]), (err: Error) => {
      assert.ok(err instanceof JsonlError);
      assert.match(
        err.message,
        /^Cannot write JSONL to ".*out\.jsonl": record 2 is not serializable \(TypeError\)$/,
      );
      assert.ok(!err.message.includes(SENTINEL));
      return true;
    });
    await assert.rejects(
      writeJsonl(path, [undefined]),
      /record 1 is not serializable \(undefined\)/,
    );
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(writeJsonl(path, [{ a: 1 }], { signal: controller.signal }), /: aborted$/);
    const broken = async function* () {
      yield { a: 1 };
      throw new RangeError("Producer failed");
    };
    await assert.rejects(writeJsonl(path, broken()), {
      name: "RangeError",
      message: "Producer failed",
    });
    assert.equal(await Deno.readTextFile(path), '{"old":true}\n');
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["out.jsonl"]);
    await assert.rejects(
      writeJsonl(`${dir}/missing/x.jsonl`, [{}]),
      /Cannot write JSONL to ".*": NotFound$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
