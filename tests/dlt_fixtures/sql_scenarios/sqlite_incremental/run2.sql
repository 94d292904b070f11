UPDATE orders SET price = 11.00, updated = '2024-01-04 12:00:00' WHERE id = 2;
INSERT INTO orders VALUES
  (6, 'fay', 1.0, 5.00, 1, '2024-01-03 00:00:00.000000', NULL, NULL, NULL, 'on the boundary, new key', NULL, 7),
  (7, 'gus', 2.0, 6.00, 0, '2024-01-05 00:00:00', '2024-01-06', '{"x": [1]}', NULL, NULL, NULL, NULL),
  (8, 'hal', 3.0, 7.00, 1, '2023-06-01 00:00:00', NULL, NULL, NULL, 'before the start', NULL, NULL);
