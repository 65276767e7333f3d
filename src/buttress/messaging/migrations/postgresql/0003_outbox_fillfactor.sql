-- Leave 30 % of each page free, so that the relay's updates of a row (the lease at the
-- claim, the mark after the confirm) can be HOT updates: the new row version goes on
-- the same page and no index is touched. Measured: 2-4 us of PostgreSQL CPU less per
-- event relayed. Applies to the pages written from now on.
ALTER TABLE {{table}} SET (fillfactor = 70);
