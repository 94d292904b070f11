-- The example shop database (examples/sql_orders/shop.db is made from this script):
--   sqlite3 examples/sql_orders/shop.db < examples/sql_orders/shop.sql
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name VARCHAR(40) NOT NULL,
    country CHAR(2)
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    amount DECIMAL(10, 2) NOT NULL,
    paid BOOLEAN NOT NULL,
    lines JSON,
    updated_at DATETIME NOT NULL
);
INSERT INTO customers VALUES (1, 'Ada', 'GB'), (2, 'Grace', 'US'), (3, 'Linus', 'FI');
INSERT INTO orders VALUES
  (1, 1, 12.50, 1, '[{"sku": "A-1", "qty": 1}]', '2024-01-01 09:00:00'),
  (2, 2, 99.99, 0, '[{"sku": "B-7", "qty": 3}, {"sku": "C-2", "qty": 1}]', '2024-01-01 10:30:00'),
  (3, 1, 5.00, 1, NULL, '2024-01-02 08:15:00'),
  (4, 3, 42.00, 1, '[{"sku": "A-1", "qty": 2}]', '2024-01-03 17:45:00');
