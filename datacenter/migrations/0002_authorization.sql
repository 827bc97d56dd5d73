-- Authorization (委托授权, e-book manual §4): the enterprise registry and the two kinds of grant.
-- Dates are China dates YYYY-MM-DD (inclusive); times integer microseconds UTC.

-- Who an enterprise is, by customs code: filled from the certificates of the cards that call
-- the authorization service and by `eport-datacenter registry import`. A grant needs the
-- agent's credit code and name from here (the principal's come from its own card).
CREATE TABLE enterprises (
    customs_code TEXT    PRIMARY KEY,
    credit_code  TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- 企业间授权: the principal lets the agent enter data of one subsystem for it. The parties'
-- codes and names are kept as they were when granted (the list screen shows them). One grant
-- per (principal, agent, subsystem): granting again replaces its validity.
CREATE TABLE enterprise_grants (
    grant_id              TEXT    PRIMARY KEY,
    principal_code        TEXT    NOT NULL,
    principal_credit_code TEXT    NOT NULL,
    principal_name        TEXT    NOT NULL,
    agent_code            TEXT    NOT NULL,
    agent_credit_code     TEXT    NOT NULL,
    agent_name            TEXT    NOT NULL,
    subsystem             TEXT    NOT NULL,
    grant_type            TEXT    NOT NULL,
    valid_from            TEXT    NOT NULL,
    valid_until           TEXT    NOT NULL,
    granted_on            TEXT    NOT NULL,
    granted_by_card       TEXT    NOT NULL,
    granted_at            INTEGER NOT NULL,
    UNIQUE (principal_code, agent_code, subsystem)
) WITHOUT ROWID;
-- check_acting_for and the "received" list look grants up by the agent.
CREATE INDEX enterprise_grants_agent ON enterprise_grants (agent_code, subsystem);

-- 企业内授权: the agent lets one of its operator cards (or, with operator_card_id '', all of
-- them) use a grant it received. No ON DELETE CASCADE: deleting an enterprise grant deletes
-- these explicitly, so it can count them; the foreign key refuses orphans.
CREATE TABLE operator_grants (
    operator_grant_id TEXT    PRIMARY KEY,
    grant_id          TEXT    NOT NULL REFERENCES enterprise_grants (grant_id),
    operator_card_id  TEXT    NOT NULL,
    granted_on        TEXT    NOT NULL,
    granted_by_card   TEXT    NOT NULL,
    granted_at        INTEGER NOT NULL,
    UNIQUE (grant_id, operator_card_id)
) WITHOUT ROWID;
