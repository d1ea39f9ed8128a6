//! The SQL objects of `CREATE EXTENSION pg_keeper` besides the functions: node_info, the
//! trigger that keeps it writable only through the API, the admin role and the grants.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE TABLE pgkeeper.node_info (
    seqno         integer PRIMARY KEY,
    name          text    NOT NULL UNIQUE,
    conninfo      text    NOT NULL,
    is_master     boolean NOT NULL DEFAULT false,
    is_nextmaster boolean NOT NULL DEFAULT false,
    is_sync       boolean NOT NULL DEFAULT false,
    is_witness    boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE pgkeeper.node_info IS 'pg_keeper node registry; change it with pgkeeper.add_node / pgkeeper.del_node';
"#,
    name = "node_info",
    bootstrap
);

extension_sql!(
    r#"
CREATE FUNCTION pgkeeper.node_info_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pgkeeper._api_write_allowed() THEN
        RAISE EXCEPTION 'pgkeeper.node_info cannot be modified directly'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Use pgkeeper.add_node() and pgkeeper.del_node().';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER node_info_guard BEFORE INSERT OR UPDATE OR DELETE ON pgkeeper.node_info
    FOR EACH ROW EXECUTE FUNCTION pgkeeper.node_info_guard();
CREATE TRIGGER node_info_guard_truncate BEFORE TRUNCATE ON pgkeeper.node_info
    FOR EACH STATEMENT EXECUTE FUNCTION pgkeeper.node_info_guard();

-- The membership version: +1 per add_node / del_node (docs/design.md, "Membership changes").
-- Replicated with node_info; a witness gets it from the master with node_info.
CREATE TABLE pgkeeper.membership (version bigint NOT NULL CHECK (version >= 0));
INSERT INTO pgkeeper.membership VALUES (0);
COMMENT ON TABLE pgkeeper.membership IS 'pg_keeper membership version; changed by pgkeeper.add_node / pgkeeper.del_node';
CREATE TRIGGER membership_guard BEFORE INSERT OR UPDATE OR DELETE ON pgkeeper.membership
    FOR EACH ROW EXECUTE FUNCTION pgkeeper.node_info_guard();
CREATE TRIGGER membership_guard_truncate BEFORE TRUNCATE ON pgkeeper.membership
    FOR EACH STATEMENT EXECUTE FUNCTION pgkeeper.node_info_guard();

-- keeper_core::gate::GateKind and Attention (crates/cli/tests/routing.rs checks they match).
CREATE TYPE pgkeeper.gate AS ENUM ('open', 'fenced', 'deposed', 'stepped_down');
CREATE TYPE pgkeeper.attention AS ENUM ('none', 'needs_rejoin', 'conflict');

CREATE FUNCTION pgkeeper.status(
    OUT node_name text, OUT mode text, OUT state text, OUT failed_rounds integer,
    OUT rounds bigint, OUT last_round timestamptz, OUT last_failover timestamptz,
    OUT worker_pid integer, OUT peers jsonb,
    OUT sync_state text, OUT sync_since timestamptz, OUT sync_reason text,
    OUT term bigint, OUT commits text, OUT gate pgkeeper.gate, OUT attention pgkeeper.attention,
    OUT paused boolean)
RETURNS SETOF record LANGUAGE sql VOLATILE AS $$
    SELECT node_name, mode, state, failed_rounds, rounds,
           to_timestamp(last_round_epoch), to_timestamp(last_failover_epoch),
           worker_pid, peers::jsonb,
           sync_state, to_timestamp(sync_since_epoch), nullif(sync_reason, ''),
           term, commits, gate::pgkeeper.gate, attention::pgkeeper.attention, paused
    FROM pgkeeper._status_raw()
$$;

-- Who may manage the cluster: superusers, and members of pgkeeper_admin.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgkeeper_admin') THEN
        CREATE ROLE pgkeeper_admin NOLOGIN;
    END IF;
END
$$;
-- conninfo may hold passwords: node_info is not for PUBLIC.
REVOKE ALL ON TABLE pgkeeper.node_info, pgkeeper.membership FROM PUBLIC;
REVOKE ALL ON SCHEMA pgkeeper FROM PUBLIC;
GRANT USAGE ON SCHEMA pgkeeper TO pgkeeper_admin, pg_monitor;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgkeeper.node_info TO pgkeeper_admin;
GRANT SELECT, UPDATE ON pgkeeper.membership TO pgkeeper_admin;
REVOKE ALL ON FUNCTION pgkeeper.add_node(text, text, boolean), pgkeeper.del_node(text),
    pgkeeper.del_node(integer), pgkeeper.indirect_polling(text, integer, boolean),
    pgkeeper.indirect_kill(text), pgkeeper._api_write_allowed(), pgkeeper.pause_failover(integer),
    pgkeeper._status_raw(), pgkeeper.status(), pgkeeper.node_info_guard(),
    pgkeeper._poll(text, bigint, bigint, text[]), pgkeeper.request_vote(text, bigint, text, boolean, bigint, bigint),
    pgkeeper.stand_for_election(boolean), pgkeeper.step_down(text), pgkeeper._release(text, bigint, text),
    pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgkeeper.add_node(text, text, boolean), pgkeeper.del_node(text),
    pgkeeper.del_node(integer), pgkeeper.indirect_polling(text, integer, boolean),
    pgkeeper.indirect_kill(text), pgkeeper._api_write_allowed(), pgkeeper.pause_failover(integer),
    pgkeeper._status_raw(), pgkeeper.status(), pgkeeper.node_info_guard(),
    pgkeeper._poll(text, bigint, bigint, text[]), pgkeeper.request_vote(text, bigint, text, boolean, bigint, bigint),
    pgkeeper.stand_for_election(boolean), pgkeeper.step_down(text), pgkeeper._release(text, bigint, text),
    pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint) TO pgkeeper_admin;
GRANT EXECUTE ON FUNCTION pgkeeper._status_raw(), pgkeeper.status() TO pg_monitor;

-- What one node asks of another (issue 5/7: least privilege). The worker connects as the
-- user in the node's conninfo; make that a login role in pgkeeper_agent, e.g.
--   CREATE ROLE pgkeeper LOGIN REPLICATION IN ROLE pgkeeper_agent PASSWORD '...';
-- (REPLICATION because standbys stream as that user too). pgkeeper_agent may run only the
-- calls below and read node_info: no user table, no add_node, no step_down. The calls that
-- read or write pg_keeper's own tables run as the extension's owner, with a fixed
-- search_path.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgkeeper_agent') THEN
        CREATE ROLE pgkeeper_agent NOLOGIN;
    END IF;
END
$$;
-- The newest timeline of this node and its history file (a standby deciding whether it can
-- follow this new master), without pg_read_server_files.
CREATE FUNCTION pgkeeper._timeline_history(OUT timeline bigint, OUT history text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ('x' || t)::bit(32)::bigint, pg_catalog.pg_read_file('pg_wal/' || t || '.history', 0, 1048576, true)
    FROM (SELECT substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) AS t) s
$$;
-- May `caller` (the calling role: `current_user` where indirect_polling runs) make this
-- server connect with `conninfo`? Superusers and pgkeeper_admin members: any conninfo.
-- Others (pgkeeper_agent): only a registered node's, so that nobody can point the server
-- (its password file, its client certificate) at a host of their choosing.
CREATE FUNCTION pgkeeper._may_connect(conninfo text, caller name) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $2), false)
        OR pg_catalog.pg_has_role($2, 'pgkeeper_admin', 'USAGE')
        OR EXISTS (SELECT 1 FROM pgkeeper.node_info n WHERE n.conninfo = $1)
$$;
ALTER FUNCTION pgkeeper._poll(text, bigint, bigint, text[]) SECURITY DEFINER SET search_path = pg_catalog, pgkeeper, pg_temp;
ALTER FUNCTION pgkeeper.request_vote(text, bigint, text, boolean, bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pgkeeper, pg_temp;
ALTER FUNCTION pgkeeper._release(text, bigint, text) SECURITY DEFINER SET search_path = pg_catalog, pgkeeper, pg_temp;
ALTER FUNCTION pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint) SECURITY DEFINER SET search_path = pg_catalog, pgkeeper, pg_temp;
REVOKE ALL ON FUNCTION pgkeeper._timeline_history(), pgkeeper._may_connect(text, name) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgkeeper TO pgkeeper_agent;
GRANT EXECUTE ON FUNCTION pgkeeper._poll(text, bigint, bigint, text[]),
    pgkeeper.request_vote(text, bigint, text, boolean, bigint, bigint), pgkeeper._release(text, bigint, text),
    pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint),
    pgkeeper.indirect_polling(text, integer, boolean), pgkeeper._timeline_history(), pgkeeper._may_connect(text, name)
    TO pgkeeper_agent;
GRANT EXECUTE ON FUNCTION pgkeeper._timeline_history(), pgkeeper._may_connect(text, name) TO pgkeeper_admin;
-- An automatic rejoin (`pgkeeper rejoin --auto`, started by the worker with the nodes'
-- conninfo) reads node_info and every node's status: node_info holds no secret in the
-- recommended setup (passwords in a password file).
GRANT SELECT ON pgkeeper.node_info TO pgkeeper_agent;
GRANT EXECUTE ON FUNCTION pgkeeper._status_raw(), pgkeeper.status() TO pgkeeper_agent;

-- The history (keeper_core::history): what the masters copied from their logs, replicated.
-- Written by the pg_keeper worker only.
CREATE TABLE pgkeeper.history (
    node_name text        NOT NULL,
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL,
    event     text        NOT NULL,
    term      bigint      NOT NULL,
    nodes     text[]      NOT NULL,
    reason    text        NOT NULL,
    PRIMARY KEY (node_name, seq, at)
);
COMMENT ON TABLE pgkeeper.history IS 'pg_keeper events copied by the masters; pgkeeper.history() adds this node''s own';
-- The table and this node's own log (events not copied yet: a standby's, a fenced
-- master's), oldest first.
CREATE FUNCTION pgkeeper.history(
    OUT at timestamptz, OUT node_name text, OUT seq bigint, OUT event text, OUT term bigint,
    OUT nodes text[], OUT reason text, OUT replicated boolean)
RETURNS SETOF record LANGUAGE sql VOLATILE AS $$
    SELECT at, node_name, seq, event, term, nodes, reason, replicated FROM (
        SELECT h.at, h.node_name, h.seq, h.event, h.term, h.nodes, h.reason, true AS replicated
        FROM pgkeeper.history h
        UNION ALL
        SELECT to_timestamp(l.at_epoch), l.node_name, l.seq, l.event, l.term, l.nodes, l.reason, false
        FROM pgkeeper._local_history() l
        WHERE NOT EXISTS (SELECT 1 FROM pgkeeper.history h
                          WHERE h.node_name = l.node_name AND h.seq = l.seq AND h.at = to_timestamp(l.at_epoch))
    ) e ORDER BY at, node_name, seq
$$;
-- Cluster-wide maintenance mode (pgkeeper.pause() / pgkeeper.resume(), on the master):
-- replicated, so it holds on every node and across restarts.
CREATE TABLE pgkeeper.maintenance (paused boolean NOT NULL, since timestamptz, reason text);
INSERT INTO pgkeeper.maintenance VALUES (false, NULL, NULL);
REVOKE ALL ON TABLE pgkeeper.history, pgkeeper.maintenance FROM PUBLIC;
REVOKE ALL ON FUNCTION pgkeeper.history(), pgkeeper._local_history(), pgkeeper.pause(text), pgkeeper.resume() FROM PUBLIC;
GRANT SELECT ON pgkeeper.history, pgkeeper.maintenance TO pgkeeper_admin, pg_monitor, pgkeeper_agent;
GRANT UPDATE ON pgkeeper.maintenance TO pgkeeper_admin;
GRANT EXECUTE ON FUNCTION pgkeeper.history(), pgkeeper._local_history() TO pgkeeper_admin, pg_monitor, pgkeeper_agent;
GRANT EXECUTE ON FUNCTION pgkeeper.pause(text), pgkeeper.resume() TO pgkeeper_admin;
REVOKE ALL ON FUNCTION pgkeeper._force_failover(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgkeeper._force_failover(text[]) TO pgkeeper_admin;
"#,
    name = "guards_and_grants",
    finalize
);
