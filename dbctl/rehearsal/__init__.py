"""`dbctl migrate rehearse`: the pending migrations applied to a copy of real data, watched.

engine   apply each pending migration as the migrator while a second connection samples pg_locks; per
         migration its duration, strongest lock, table, how long it was held, and what lock_timeout means
load     an optional light read/write load of the app's own queries, as the app's role; the longest wait
copies   where the copy comes from: the latest local backup restored into a scratch database (dropped
         afterwards), or a database URL the user gives (a PITR clone), never the stack's primary
"""
