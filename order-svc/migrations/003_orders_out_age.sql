-- ord_out carries, for an outcome that decides an order (order_confirmed, order_rejected,
-- order_cancelled), the seconds from its placement to that decision: order-svc's histogram
-- valerix_order_decision_seconds reads it (NULL for any other outcome).
ALTER TYPE ord_out ADD ATTRIBUTE out_age double precision;
