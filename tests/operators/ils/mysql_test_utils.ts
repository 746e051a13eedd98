/**
 * MariaDB for tests: `CARREL_TEST_MYSQL_URL` names a server (`.ci/run` starts a throwaway one),
 * each test file makes its own databases and drops them; without the variable the MariaDB
 * variants are skipped and say so once.
 *
 * @module
 */
import mariadb, { type Connection } from "mariadb";
import { mysqlOptions } from "../../../operators/ils/sql_mysql.ts";

/** The MariaDB (or MySQL) server for tests, e.g. `mysql://carrel:pw@127.0.0.1:33306/`. */
export const TEST_MYSQL_URL: string | undefined = Deno.env.get("CARREL_TEST_MYSQL_URL") ||
  undefined;

let warned = false;
/** Says once per process that the MariaDB variants were skipped. */
export function noteMysqlSkipped(): void {
  if (!TEST_MYSQL_URL && !warned) {
    warned = true;
    console.log("MariaDB variants skipped: set CARREL_TEST_MYSQL_URL to run them");
  }
}

/** A URL of the test server with another database. */
export function mysqlUrlFor(database: string): string {
  const url = new URL(TEST_MYSQL_URL!.replace(/^(mysql|mariadb):/i, "http:"));
  url.pathname = `/${database}`;
  return url.toString().replace(/^http:/, "mysql:");
}

/** Opens an admin connection to the test server (no database selected). */
export async function mysqlAdmin(): Promise<Connection> {
  return await mariadb.createConnection(mysqlOptions(mysqlUrlFor(""), "the test server"));
}

/** A fresh database on the test server, dropped on dispose. */
export async function freshMysqlDatabase(
  label: string,
): Promise<{ url: string; name: string } & AsyncDisposable> {
  if (!TEST_MYSQL_URL) throw new Error("CARREL_TEST_MYSQL_URL is not set");
  const name = `carrel_test_${label.replace(/[^a-z0-9_]/g, "_")}_${
    crypto.randomUUID().slice(0, 8)
  }`;
  const admin = await mysqlAdmin();
  try {
    await admin.query(`CREATE DATABASE \`${name}\``);
  } finally {
    await admin.end();
  }
  return {
    url: mysqlUrlFor(name),
    name,
    async [Symbol.asyncDispose]() {
      const conn = await mysqlAdmin();
      try {
        await conn.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await conn.end();
      }
    },
  };
}

/** Runs SQL on a test database and returns the rows (BIGINTs as numbers). */
export async function mysqlQuery<T>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const conn = await mariadb.createConnection({
    ...mysqlOptions(url, "the test database"),
    bigIntAsNumber: true,
  });
  try {
    return await conn.query<T[]>(sql, params);
  } finally {
    await conn.end();
  }
}
