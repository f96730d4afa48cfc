-- order_history keeps only what no column of orders keeps: a status the order left. PENDING is the
-- order's created_at, its status now its updated_at and reason; ord_history (R_orders_functions.sql)
-- puts the three together, and GET /orders/{id} reads that. Rows written before this version, one
-- per status change, stay and are never derived twice.
COMMENT ON TABLE order_history IS
    'Statuses an order left (only CONFIRMED, by a cancellation); the rest is derived from orders by ord_history';
