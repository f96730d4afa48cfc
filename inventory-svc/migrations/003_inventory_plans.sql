-- inv_apply_batch plans its statements once per connection. Its one parameter is a jsonb array whose
-- contents no custom plan could estimate better, and planning each statement at every call cost
-- about 0.1 ms each: a quarter of a one-command batch (make bench, 64 connections).
ALTER FUNCTION inv_apply_batch(jsonb) SET plan_cache_mode = force_generic_plan;
