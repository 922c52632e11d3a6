"""The PostgreSQL backend: psycopg 3 on worker threads behind the storage protocols."""
