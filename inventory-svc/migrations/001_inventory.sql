-- inventory-svc owns stock: the tables. The functions that change them are in R_inventory_functions.sql.
CREATE TABLE products (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    stock      bigint NOT NULL CHECK (stock >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What each order holds right now; a release gives all of it back and deletes the rows.
-- (No foreign key to products: rows are written only for products just locked and checked.)
CREATE TABLE holds (
    order_id   text NOT NULL,
    product_id text NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, product_id)
);

-- Orders released, even before any reservation arrived: a reservation that comes after its
-- release is refused, so a release that overtakes it cannot leave stock held for ever.
CREATE TABLE released_orders (
    order_id    text PRIMARY KEY,
    released_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX released_orders_at ON released_orders (released_at);
