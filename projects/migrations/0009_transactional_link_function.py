"""PostgreSQL: ``relay_transactional_link(jsonb)``, the write of one transactional link in one
statement (``transactional.services._write_one`` calls it; other databases, and bulk calls,
take the Python engine).

It does what ``_write`` does for one item, in the same order and with the same rules: the
identity lock, the look for a stored key or transaction id (answered ``{"stored": true}``:
the caller reads and answers the replay), the directory person found by PersonID, else email,
else phone (smallest pk), made or updated (given values win, metadata merged; the caller sends
no protected metadata key here), the participant made or found, the link and the transaction.
Given ``project_state`` (the project's fields a caller decided with, from a project it keeps),
it first checks they are still the project's, and answers ``{"stale": true}`` otherwise.
A plpgsql function keeps its statements' plans per session, and one statement in autocommit
is its own transaction: one round trip instead of seven.

The columns are written out: a new column without a database default in one of these tables
needs a migration that replaces the function (the PostgreSQL suite fails until then).
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION relay_transactional_link(p jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_brand bigint := (p->>'brand')::bigint;
    v_project bigint := (p->>'project')::bigint;
    v_now timestamptz := (p->>'now')::timestamptz;
    v_values jsonb := p->'values';
    v_metadata jsonb := CASE WHEN jsonb_typeof(p->'metadata') = 'object' THEN p->'metadata' END;
    v_person bigint;
    v_pid text;
    v_participant bigint;
    v_link bigint;
    v_transaction bigint;
BEGIN
    -- The caller decided with a project it read earlier (the API keeps it per process): it
    -- sends the fields its decision used, and writes only if they are still the project's.
    IF p ? 'project_state' AND NOT EXISTS (
        SELECT 1 FROM projects_project
         WHERE id = v_project AND brand_id = v_brand
           AND stage = p->'project_state'->>'stage'
           AND default_country = p->'project_state'->>'default_country'
           AND available_from IS NOT DISTINCT FROM
               (p->'project_state'->>'available_from')::timestamptz
           AND available_until IS NOT DISTINCT FROM
               (p->'project_state'->>'available_until')::timestamptz) THEN
        RETURN '{"stale": true}'::jsonb;
    END IF;
    -- Calls about one contact identity wait for each other (the bulk path takes the same).
    PERFORM pg_advisory_xact_lock((p->>'lock_class')::int, (p->>'lock')::int);
    -- Each statement of a volatile function reads the database as it is when the statement
    -- starts: this sees what a competitor committed before releasing the lock.
    PERFORM 1 FROM projects_transaction
     WHERE project_id = v_project AND idempotency_key = p->>'key'
       AND NOT (idempotency_key = '');
    IF NOT FOUND THEN
        PERFORM 1 FROM projects_transaction
         WHERE project_id = v_project AND external_id = p->>'external_id';
    END IF;
    IF FOUND THEN
        RETURN '{"stored": true}'::jsonb;
    END IF;

    IF v_values ? 'person_id' THEN
        SELECT id, person_id INTO v_person, v_pid FROM participants_person
         WHERE brand_id = v_brand AND person_id = v_values->>'person_id'
           AND NOT (person_id = '');
    ELSE
        IF v_values ? 'email' THEN
            SELECT id, person_id INTO v_person, v_pid FROM participants_person
             WHERE brand_id = v_brand AND email = v_values->>'email' ORDER BY id LIMIT 1;
        END IF;
        IF v_person IS NULL AND v_values ? 'phone' THEN
            SELECT id, person_id INTO v_person, v_pid FROM participants_person
             WHERE brand_id = v_brand AND phone = v_values->>'phone' ORDER BY id LIMIT 1;
        END IF;
    END IF;

    IF v_person IS NULL THEN
        INSERT INTO participants_person (person_id, first_name, last_name, email, username,
                                         phone, metadata, created_at, updated_at, brand_id)
        VALUES (coalesce(v_values->>'person_id', ''), coalesce(v_values->>'first_name', ''),
                coalesce(v_values->>'last_name', ''), coalesce(v_values->>'email', ''),
                coalesce(v_values->>'username', ''), coalesce(v_values->>'phone', ''),
                coalesce(v_metadata, '{}'::jsonb), v_now, v_now, v_brand)
        RETURNING id, person_id INTO v_person, v_pid;
    ELSE
        UPDATE participants_person pe SET
            email = coalesce(v_values->>'email', pe.email),
            phone = coalesce(v_values->>'phone', pe.phone),
            first_name = coalesce(v_values->>'first_name', pe.first_name),
            last_name = coalesce(v_values->>'last_name', pe.last_name),
            username = coalesce(v_values->>'username', pe.username),
            metadata = CASE WHEN v_metadata IS NULL THEN pe.metadata
                            ELSE pe.metadata || v_metadata END,
            updated_at = v_now
         WHERE pe.id = v_person
           AND (pe.email <> coalesce(v_values->>'email', pe.email)
                OR pe.phone <> coalesce(v_values->>'phone', pe.phone)
                OR pe.first_name <> coalesce(v_values->>'first_name', pe.first_name)
                OR pe.last_name <> coalesce(v_values->>'last_name', pe.last_name)
                OR pe.username <> coalesce(v_values->>'username', pe.username)
                OR (v_metadata IS NOT NULL AND pe.metadata || v_metadata <> pe.metadata));
    END IF;

    -- A participant another transaction is adding makes this insert wait for it; the
    -- read after it then sees it.
    INSERT INTO participants_participant (project_id, person_id, role, metadata, added_by_id,
                                          created_at, updated_at)
    VALUES (v_project, v_person, '', '{}'::jsonb, NULL, v_now, v_now)
    ON CONFLICT (project_id, person_id) DO NOTHING
    RETURNING id INTO v_participant;
    IF v_participant IS NULL THEN
        SELECT id INTO v_participant FROM participants_participant
         WHERE project_id = v_project AND person_id = v_person;
    END IF;

    INSERT INTO projects_surveylink (token, expires_at, opened_at, completed_at, created_at,
                                     distribution_id, message_id, participant_id, project_id,
                                     channel)
    VALUES (p->>'token', (p->>'expires_at')::timestamptz, NULL, NULL, v_now,
            (p->>'distribution')::bigint, NULL, v_participant, v_project, p->>'channel')
    RETURNING id INTO v_link;

    INSERT INTO projects_transaction (external_id, occurred_at, data, channel_label,
                                      idempotency_key, fingerprint, request, created_at,
                                      link_id, participant_id, project_id)
    VALUES (p->>'external_id', (p->>'occurred_at')::timestamptz, p->'data',
            p->>'channel_label', p->>'key', p->>'fingerprint', p->'request', v_now,
            v_link, v_participant, v_project)
    RETURNING id INTO v_transaction;

    RETURN jsonb_build_object('link', v_link, 'transaction', v_transaction,
                              'participant', v_participant, 'person', v_person,
                              'person_id', v_pid);
END
$fn$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS relay_transactional_link(jsonb)")


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0008_signing_secret_grace"),
        ("participants", "0004_fk_indexes_covered_by_composites"),
        ("distributions", "0007_series_email_fields"),
    ]

    operations = [migrations.RunPython(create, drop)]
