-- Least-privilege replication user for the CDC worker.
-- The mysql image has already created 'cdc'@'%' from MYSQL_USER / MYSQL_PASSWORD (so the
-- password comes from the environment, not from this file) with ALL on MYSQL_DATABASE.
-- Narrow it to what the worker needs: read the binlog, read the helpdesk tables. (No CREATE
-- USER here on purpose: without MYSQL_USER the GRANTs fail loudly instead of making a
-- passwordless user.)
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'cdc'@'%';
-- RELOAD: the initial snapshot holds FLUSH TABLES WITH READ LOCK for an instant to read
-- its binlog position (MySQL has no lock-free snapshot position, unlike MariaDB).
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO 'cdc'@'%';
GRANT SELECT ON helpdesk.* TO 'cdc'@'%';
