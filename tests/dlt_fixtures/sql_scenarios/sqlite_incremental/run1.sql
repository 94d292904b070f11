CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer VARCHAR(20) NOT NULL,
    score REAL,
    price DECIMAL(10, 2),
    paid BOOLEAN,
    updated DATETIME NOT NULL,
    ship_day DATE,
    meta JSON,
    receipt BLOB,
    note TEXT,
    never_set DATE,
    untyped
);
INSERT INTO orders VALUES
  (1, 'ann', 1.5, 10.25, 1, '2023-12-31 23:00:00', '2024-01-02', '{"gift": true, "n": 1}', x'00ff', 'old: before the start', NULL, 1),
  (2, 'bob', NULL, 3.10, 0, '2024-01-01 10:00:00', NULL, NULL, NULL, NULL, NULL, 'text'),
  (3, 'cy', -2.0, NULL, NULL, '2024-01-02 08:30:00', '2024-01-05', '[1, 2]', NULL, 'ÄÖ ünïcode', NULL, 2.5),
  (4, 'di', 0.0, 0.01, 1, '2024-01-03 00:00:00.000000', NULL, NULL, x'0a', NULL, NULL, NULL),
  (5, 'ed', 7.25, 99.99, 0, '2024-01-03 00:00:00.000000', NULL, '{}', NULL, 'same cursor as 4', NULL, NULL);
