/**
 * The pure parts of the Koha and hold-queue operators: Koha's wall-clock times across a
 * daylight-saving change, branch codes, the reasons a checkout is set aside, every hold state of
 * both ILSs, queue bands, and that nothing but the schema's fields comes out.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  branchId,
  deidentifyKohaCirculation,
  kohaCirculationParams,
  kohaInstant,
  kohaWallTime,
  UnmappedBranchError,
} from "../../../operators/ils/koha.ts";
import {
  deidentifyEvergreenHold,
  deidentifyKohaHold,
  HOLD_REQUEST_COLUMNS,
  queueBand,
} from "../../../operators/ils/holds.ts";
import { CIRCULATION_EVENT_COLUMNS } from "../../../operators/ils/circulation.ts";

Deno.test("Koha wall-clock times convert in Koha's time zone, across DST", () => {
  assert.equal(kohaInstant("2026-03-07 12:00:00", "America/Chicago"), "2026-03-07T18:00:00.000Z");
  assert.equal(kohaInstant("2026-03-09 12:00:00", "America/Chicago"), "2026-03-09T17:00:00.000Z");
  assert.equal(kohaInstant("2026-03-09", "America/Chicago"), "2026-03-09T05:00:00.000Z");
  assert.equal(kohaInstant("0000-00-00 00:00:00", "UTC"), null);
  assert.equal(kohaInstant(null, "UTC"), null);
  assert.equal(
    kohaWallTime(new Date("2026-07-01T12:00:00Z"), "Europe/Helsinki"),
    "2026-07-01 15:00:00",
  );
  assert.deepEqual(
    kohaCirculationParams(
      new Date("2026-01-01T06:00:00Z"),
      new Date("2026-01-02T06:00:00Z"),
      "America/Chicago",
    ),
    ["2026-01-01 00:00:00", "2026-01-02 00:00:00", "2026-01-01 00:00:00", "2026-01-02 00:00:00"],
  );
});

Deno.test("branch codes map to library ids; an unmapped one names the code only", () => {
  assert.equal(branchId({ CPL: 4 }, "CPL", "x"), 4);
  assert.equal(branchId({ CPL: 4 }, null, "x"), null);
  assert.throws(() => branchId({ CPL: 4 }, "MPL", "pickup library"), (err: Error) => {
    assert.ok(err instanceof UnmappedBranchError);
    assert.match(err.message, /^Koha branch code "MPL" \(pickup library\) has no library id/);
    return true;
  });
  // Something that is not a branch code is never echoed.
  assert.throws(() => branchId({}, "jane@example.org", "x"), /branch code "\?"/);
  // Inherited properties are not ids.
  assert.throws(() => branchId({}, "constructor", "x"), UnmappedBranchError);
});

Deno.test("a Koha checkout becomes a circulation event, or is set aside with a reason", () => {
  const row = {
    circ_id: "7",
    patron_id: "42",
    dob: "1984-05-01",
    post_code: "FZ3 9Q2",
    home_branch: "CPL",
    copy_id: "9",
    bib_id: "3",
    circ_branch: "FFL",
    circ_modifier: "BK",
    issuedate: "2026-03-01 10:00:00",
    date_due: "2026-03-15 23:59:00",
    returndate: null,
    itemlost: 1,
  };
  const branches = { CPL: 4, FFL: 5 };
  const result = deidentifyKohaCirculation(row, {
    branches,
    timeZone: "UTC",
    birthYearBand: true,
    postalPrefix: true,
  });
  assert.ok("event" in result);
  assert.deepEqual(
    Object.keys(result.event).sort(),
    [
      ...CIRCULATION_EVENT_COLUMNS.filter((c) => c !== "patron_token"),
      "patron_id",
    ].sort(),
  );
  assert.deepEqual(result.event, {
    circ_id: "7",
    patron_id: "42",
    copy_id: "9",
    bib_id: "3",
    circ_lib: 5,
    home_ou: 4,
    circ_modifier: "BK",
    xact_start: "2026-03-01T10:00:00.000Z",
    due_date: "2026-03-15T23:59:00.000Z",
    checkin_time: null,
    stop_fines: "LOST",
    renewal_remaining: null,
    birth_year_band: "1980-1989",
    postal_prefix: "FZ3",
  });
  const returned = deidentifyKohaCirculation({ ...row, returndate: "2026-03-05 09:00:00" }, {
    branches,
  });
  assert.ok("event" in returned);
  assert.equal(returned.event.stop_fines, "CHECKIN");
  assert.equal(returned.event.birth_year_band, null, "bands only when asked");
  assert.deepEqual(deidentifyKohaCirculation({ ...row, patron_id: null }, { branches }), {
    reason: "patron deleted or anonymized",
  });
  assert.deepEqual(
    deidentifyKohaCirculation(row, { branches, anonymousPatron: 42 }),
    { reason: "patron deleted or anonymized" },
  );
  assert.deepEqual(deidentifyKohaCirculation({ ...row, copy_id: null }, { branches }), {
    reason: "item deleted",
  });
  assert.deepEqual(deidentifyKohaCirculation({ ...row, circ_branch: null }, { branches }), {
    reason: "no checkout library",
  });
});

Deno.test("queue positions come out in bands", () => {
  assert.deepEqual(
    [1, 2, 5, 6, 10, 11, 25, 26, 400, 0, null, "x"].map(queueBand),
    ["1", "2-5", "2-5", "6-10", "6-10", "11-25", "11-25", "26+", "26+", null, null, null],
  );
});

Deno.test("every Evergreen hold state, with times, wait days and bands", () => {
  const base = {
    hold_id: "1",
    patron_id: "42",
    hold_type: "T",
    bib_id: "7",
    pickup_lib: 4,
    request_time: new Date("2026-01-01T10:00:00Z"),
    capture_time: null,
    shelf_time: null,
    fulfillment_time: null,
    cancel_time: null,
    cancel_cause: null,
    expire_time: null,
    frozen: false,
    queue_position: 3,
    cancel_note: "Patron called from 555-555-0100",
    phone_notify: "555-555-0100",
  };
  const cases: [Record<string, unknown>, string][] = [
    [{}, "pending"],
    [{ frozen: true }, "suspended"],
    [{ capture_time: new Date("2026-01-03T12:00:00Z"), queue_position: null }, "in_transit"],
    [{
      capture_time: new Date("2026-01-03T12:00:00Z"),
      shelf_time: new Date("2026-01-03T15:00:00Z"),
    }, "waiting"],
    [{
      capture_time: new Date("2026-01-03T12:00:00Z"),
      shelf_time: new Date("2026-01-03T15:00:00Z"),
      fulfillment_time: new Date("2026-01-04T09:00:00Z"),
    }, "fulfilled"],
    [{ cancel_time: new Date("2026-01-02T00:00:00Z"), cancel_cause: 6 }, "canceled"],
    [{ cancel_time: new Date("2026-01-09T00:00:00Z"), cancel_cause: 1 }, "expired"],
    [{
      cancel_time: new Date("2026-01-09T00:00:00Z"),
      cancel_cause: 5,
      expire_time: new Date("2026-01-08T00:00:00Z"),
    }, "expired"],
  ];
  for (const [change, state] of cases) {
    const hold = deidentifyEvergreenHold({ ...base, ...change });
    assert.equal(hold.state, state);
    assert.deepEqual(
      Object.keys(hold).sort(),
      [
        ...HOLD_REQUEST_COLUMNS.filter((c) => c !== "patron_token"),
        "patron_id",
      ].sort(),
      "only the schema's fields",
    );
    assert.equal(hold.queue_band, state === "pending" || state === "suspended" ? "2-5" : null);
    if (state === "waiting") assert.equal(hold.wait_days, 2);
    if (state === "pending") assert.equal(hold.wait_days, null);
  }
  assert.ok(
    !JSON.stringify(cases.map(([c]) => deidentifyEvergreenHold({ ...base, ...c })))
      .includes("555-555-0100"),
  );
  assert.equal(deidentifyEvergreenHold({ ...base, hold_type: "C" }).hold_level, "item");
  assert.equal(deidentifyEvergreenHold({ ...base, hold_type: "M", bib_id: null }).bib_id, null);
});

Deno.test("every Koha hold state, dates in Koha's time zone", () => {
  const base = {
    hold_id: "5",
    patron_id: "42",
    bib_id: "7",
    item_level_hold: 0,
    item_group_id: null,
    pickup_branch: "CPL",
    reservedate: "2026-01-02",
    waitingdate: null,
    cancellationdate: null,
    expirationdate: null,
    patron_expiration_date: null,
    found: null,
    priority: 12,
    suspend: 0,
    changed_at: "2026-01-06 08:30:00",
    closed: 0,
    reservenotes: "Text me at 555-0199",
  };
  const options = { branches: { CPL: 4 }, timeZone: "Europe/Helsinki" };
  const cases: [Record<string, unknown>, string][] = [
    [{}, "pending"],
    [{ suspend: 1 }, "suspended"],
    [{ found: "T", priority: 0 }, "in_transit"],
    [{ found: "P", priority: 0 }, "in_transit"],
    [{ found: "W", priority: 0, waitingdate: "2026-01-05" }, "waiting"],
    [{ found: "F", priority: 0, waitingdate: "2026-01-05", closed: 1 }, "fulfilled"],
    [{ cancellationdate: "2026-01-04", closed: 1 }, "canceled"],
    [{ cancellationdate: "2026-01-09", expirationdate: "2026-01-08", closed: 1 }, "expired"],
  ];
  for (const [change, state] of cases) {
    const result = deidentifyKohaHold({ ...base, ...change }, options);
    assert.ok("hold" in result);
    const hold = result.hold;
    assert.equal(hold.state, state);
    assert.equal(hold.request_time, "2026-01-01T22:00:00.000Z", "midnight in Helsinki");
    assert.equal(hold.queue_band, state === "pending" || state === "suspended" ? "11-25" : null);
    assert.ok(!JSON.stringify(hold).includes("555-0199"));
    if (state === "fulfilled") {
      assert.equal(hold.fulfillment_time, "2026-01-06T08:30:00.000Z", "TIMESTAMP read as UTC");
      assert.equal(hold.wait_days, 3);
    }
    if (state === "expired") assert.equal(hold.cancellation_time, "2026-01-08T22:00:00.000Z");
  }
  const item = deidentifyKohaHold({ ...base, item_level_hold: 1 }, options);
  assert.ok("hold" in item && item.hold.hold_level === "item");
  assert.deepEqual(deidentifyKohaHold({ ...base, patron_id: null }, options), {
    reason: "patron deleted or anonymized",
  });
  assert.throws(
    () => deidentifyKohaHold({ ...base, pickup_branch: "MPL" }, options),
    UnmappedBranchError,
  );
});
