-- Valerix's two databases, created by the postgres:15 image's entrypoint on the first start of an empty
-- data volume (it runs /docker-entrypoint-initdb.d/* as POSTGRES_USER, who then owns both). The tables
-- come from the services themselves: each applies its migrations folders at start-up.
CREATE DATABASE inventory;
CREATE DATABASE orders;
