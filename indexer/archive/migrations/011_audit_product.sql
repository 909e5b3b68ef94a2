-- Where an audit run's similarities were computed ('cpu': numpy; 'cuda': the GPU product), which
-- rounds the last bits its own way: a standing run is extended on the same kind of product, or
-- scored again in full on the one at hand, never mixed.
ALTER TABLE audit_runs ADD COLUMN product VARCHAR DEFAULT 'cpu';
