-- Run once before pgbench -f churn.sql: the tables every client shares.

-- churn.sql checks each relation with amcheck before dropping it.
CREATE EXTENSION IF NOT EXISTS amcheck;

-- One row per pgbench transaction: what that transaction read back from the files it had just
-- written (check.sql compares each column with `expected`).
CREATE TABLE churn_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client int NOT NULL,
    expected int NOT NULL,      -- rows written into each table, sorted back
    temp_rows int NOT NULL,     -- rows of the temporary table that read back as written
    own_rows int NOT NULL,      -- the same for the client's own regular table, after its rewrite
    sorted_rows int NOT NULL,   -- rows out of a sort that spilled to base/pgsql_tmp
    unsorted_rows int NOT NULL, -- of those, rows not greater than the one before
    shared_bad int NOT NULL,    -- rows of churn_shared that did not read back as written
    heap_problems int NOT NULL  -- rows of verify_heapam() over the temporary and own tables
);

-- Every client inserts into and reads this table; now and then one truncates or rewrites it.
CREATE TABLE churn_shared (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client int NOT NULL,
    n int NOT NULL,
    v text NOT NULL
);
CREATE INDEX churn_shared_client ON churn_shared (client);
