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
    OUT term bigint, OUT commits text, OUT gate pgkeeper.gate, OUT attention pgkeeper.attention)
RETURNS SETOF record LANGUAGE sql VOLATILE AS $$
    SELECT node_name, mode, state, failed_rounds, rounds,
           to_timestamp(last_round_epoch), to_timestamp(last_failover_epoch),
           worker_pid, peers::jsonb,
           sync_state, to_timestamp(sync_since_epoch), nullif(sync_reason, ''),
           term, commits, gate::pgkeeper.gate, attention::pgkeeper.attention
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
    pgkeeper.stand_for_election(), pgkeeper.step_down(text), pgkeeper._release(text, bigint, text),
    pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgkeeper.add_node(text, text, boolean), pgkeeper.del_node(text),
    pgkeeper.del_node(integer), pgkeeper.indirect_polling(text, integer, boolean),
    pgkeeper.indirect_kill(text), pgkeeper._api_write_allowed(), pgkeeper.pause_failover(integer),
    pgkeeper._status_raw(), pgkeeper.status(), pgkeeper.node_info_guard(),
    pgkeeper._poll(text, bigint, bigint, text[]), pgkeeper.request_vote(text, bigint, text, boolean, bigint, bigint),
    pgkeeper.stand_for_election(), pgkeeper.step_down(text), pgkeeper._release(text, bigint, text),
    pgkeeper._witness_sync(integer[], text[], text[], boolean[], boolean[], boolean[], boolean[], bigint) TO pgkeeper_admin;
GRANT EXECUTE ON FUNCTION pgkeeper._status_raw(), pgkeeper.status() TO pg_monitor;
"#,
    name = "guards_and_grants",
    finalize
);
