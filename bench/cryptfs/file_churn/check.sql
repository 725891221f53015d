-- Run after pgbench -f churn.sql with psql -v transactions=N (the count pgbench reported):
-- prints one line per problem, nothing when the data is consistent.

SELECT format('churn_log holds %s rows but pgbench processed %s transactions', count(*), :transactions)
  FROM churn_log
HAVING count(*) <> :transactions;

SELECT format('churn_log %s (client %s): expected %s rows, temporary table %s, own table %s, '
              'sort %s (%s out of order), %s bad churn_shared rows, %s verify_heapam problems',
              id, client, expected, temp_rows, own_rows, sorted_rows, unsorted_rows, shared_bad,
              heap_problems)
  FROM churn_log
 WHERE temp_rows <> expected OR own_rows <> expected OR sorted_rows <> expected
    OR unsorted_rows <> 0 OR shared_bad <> 0 OR heap_problems <> 0
 ORDER BY id;

SELECT format('churn_shared row %s (client %s, n %s) reads back as %s', id, client, n, v)
  FROM churn_shared
 WHERE v <> md5(client || '/' || n)
 ORDER BY id;

-- Every transaction drops the table it created; one left behind means a script stopped midway.
SELECT format('table %s was left behind', relname)
  FROM pg_class
 WHERE relname ~ '^churn_own_[0-9]+$'
 ORDER BY relname;
