-- The fast paths a service's applier runs instead of its apply function for calls of one shape
-- (common/vx_fast.h). A path takes a call whose entries are all of a type it lists (types, the same on
-- each of its rows); its steps run in step order in one pipeline, one transaction; a step's
-- parameters $1, $2 ... are text arrays of one value per entry, each the value at a path into the
-- entry (args: "oid", "c.items"). The last step returns the apply function's columns. Each service's
-- repeatable file (R_*.sql) writes its own paths with its functions, so the two change together.
CREATE TABLE vx_fast_step (
    path  text NOT NULL,
    step  int NOT NULL,
    types text[] NOT NULL,
    args  text[] NOT NULL DEFAULT '{}',
    sql   text NOT NULL,
    PRIMARY KEY (path, step),
    CHECK (array_to_string(types || args, '') !~ ',') -- read back as comma-separated lists
);
