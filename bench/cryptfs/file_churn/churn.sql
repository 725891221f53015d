-- pgbench -f churn.sql (after setup.sql; check.sql afterwards): one transaction makes
-- PostgreSQL create, extend, rewrite, truncate and unlink over a dozen relation files and a few
-- temporary files while the other clients hold theirs open, reads back what it wrote, and logs
-- one row in churn_log. Statements run one transaction each, so the locks they take never
-- form a cycle: no deadlock can make pgbench count a failed transaction.
\set rows 3000
\set rewrite random(1, 3)
\set shared_op random(1, 20)

-- Little sort memory, so sorts and set-returning functions spill to base/pgsql_tmp; few
-- temporary buffers, so temporary tables are written to their files and read back. (Setting
-- temp_buffers again is allowed after the session has used temporary tables, to the same value.)
SET work_mem = '64kB';
SET temp_buffers = '800kB';

-- A temporary table with two indexes: files t<backend>_<relfilenode>, gone at DROP. Its rows
-- are wide enough that table and indexes outgrow temp_buffers and are written and read back.
CREATE TEMP TABLE churn_temp (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO churn_temp SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, :rows) g;
CREATE INDEX churn_temp_v ON churn_temp (v);

-- A regular table of this client's own with a primary key (heap, index, TOAST table and TOAST
-- index files), updated to leave dead rows, then rewritten into new files by one of VACUUM
-- FULL, CLUSTER or REINDEX (the old files are unlinked at commit).
CREATE TABLE churn_own_:client_id (
    id int CONSTRAINT churn_own_pk_:client_id PRIMARY KEY,
    v text NOT NULL,
    updates int NOT NULL DEFAULT 0
);
INSERT INTO churn_own_:client_id (id, v) SELECT g, md5(g::text) FROM generate_series(1, :rows) g;
UPDATE churn_own_:client_id SET updates = updates + 1 WHERE id % 2 = 0;
\if :rewrite = 1
VACUUM FULL churn_own_:client_id;
\elif :rewrite = 2
CLUSTER churn_own_:client_id USING churn_own_pk_:client_id;
\else
REINDEX TABLE churn_own_:client_id;
\endif

-- The table that every client inserts into and reads. About one transaction in twenty
-- truncates it and one in twenty rewrites it, giving it new files while the other clients
-- have the old ones open.
INSERT INTO churn_shared (client, n, v)
SELECT :client_id, g, md5(:client_id || '/' || g) FROM generate_series(1, 50) g;
\if :shared_op = 1
TRUNCATE churn_shared;
\elif :shared_op = 2
VACUUM FULL churn_shared;
\endif

-- Read everything back. amcheck raises an error (and pgbench stops) on a corrupt index; the
-- counts go to churn_log. Both look at the tables before they are dropped, where the final
-- pg_amcheck cannot.
SELECT bt_index_check('churn_temp_pkey', true), bt_index_check('churn_temp_v', true),
       bt_index_check('churn_own_pk_:client_id', true),
       bt_index_check('churn_shared_pkey', true), bt_index_check('churn_shared_client', true);
INSERT INTO churn_log (client, expected, temp_rows, own_rows, sorted_rows, unsorted_rows,
                       shared_bad, heap_problems)
SELECT :client_id, :rows,
       (SELECT count(*) FROM churn_temp WHERE v = repeat(md5(id::text), 4)),
       (SELECT count(*) FROM churn_own_:client_id WHERE v = md5(id::text)),
       sorted.total, sorted.out_of_order,
       (SELECT count(*) FROM churn_shared WHERE v <> md5(client || '/' || n)),
       (SELECT count(*) FROM verify_heapam('churn_temp'))
         + (SELECT count(*) FROM verify_heapam('churn_own_:client_id'))
  FROM (SELECT count(*) AS total, count(*) FILTER (WHERE v <= previous) AS out_of_order
          FROM (SELECT v, lag(v) OVER () AS previous
                  -- OFFSET 0 keeps the sort (by v: no index on it) below the window function
                  FROM (SELECT v FROM churn_own_:client_id ORDER BY v OFFSET 0) by_v) pairs
       ) sorted;

DROP TABLE churn_temp;
DROP TABLE churn_own_:client_id;
