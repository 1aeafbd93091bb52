# The bundled PostgreSQL's roles, made so before every migration (the migration Job's first
# container; charts/hello-bot/README.md, "PostgreSQL roles"), idempotently:
#   - ADMIN_USER is the superuser, for administration only (and the operator's Shared databases);
#   - APP_USER, the bot's login, is no superuser: it owns PGDATABASE and every object in it, and
#     has CREATEROLE only when APP_CREATEROLE is true (the bot host makes a role per bot).
# A release installed before this step initialised its data directory with APP_USER as the only,
# superuser role (the official image's POSTGRES_USER); initdb scripts never run again, so this
# step also moves such a release over. Passwords are read from files in SECRETS_DIR
# (postgres_password, database_password) into a private passfile: never into argv or the
# environment. Reads PGHOST, PGPORT, PGDATABASE as libpq does.
set -eu
umask 077
for secret in postgres_password database_password; do
  [ -r "$SECRETS_DIR/$secret" ] || { echo "postgresql-roles: cannot read $SECRETS_DIR/$secret" >&2; exit 1; }
done
passfile="$(mktemp)"
trap 'rm -f "$passfile"' EXIT
# .pgpass escapes : and \ in a password.
escaped() { sed 's/[\\:]/\\&/g' "$1"; }
{
  printf '*:*:*:%s:%s\n' "$ADMIN_USER" "$(escaped "$SECRETS_DIR/postgres_password")"
  printf '*:*:*:%s:%s\n' "$APP_USER" "$(escaped "$SECRETS_DIR/database_password")"
} >"$passfile"
export PGPASSFILE="$passfile"
case "$APP_CREATEROLE" in
  true) createrole=CREATEROLE ;;
  false) createrole=NOCREATEROLE ;;
  *) echo "postgresql-roles: APP_CREATEROLE must be true or false, not $APP_CREATEROLE" >&2; exit 2 ;;
esac
sql() { psql -X -q -v ON_ERROR_STOP=1 -v admin="$ADMIN_USER" -v app="$APP_USER" "$@"; }

if ! psql -X -q -U "$ADMIN_USER" -c 'select 1' >/dev/null 2>&1; then
  echo "postgresql-roles: $ADMIN_USER cannot log in; making it as $APP_USER (a release installed before the admin role existed)"
  sql -U "$APP_USER" <<'SQL' || { echo "postgresql-roles: neither $ADMIN_USER (postgres_password) nor $APP_USER (a superuser of an older release) could make the admin role; is postgres_password the admin's password?" >&2; exit 1; }
\set admin_password `cat "$SECRETS_DIR/postgres_password"`
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :'admin') AS admin_exists \gset
\if :admin_exists
ALTER ROLE :"admin" WITH SUPERUSER LOGIN PASSWORD :'admin_password';
\else
CREATE ROLE :"admin" WITH SUPERUSER LOGIN PASSWORD :'admin_password';
\endif
SQL
fi

sql -U "$ADMIN_USER" -v createrole="$createrole" <<'SQL'
\set app_password `cat "$SECRETS_DIR/database_password"`
\set retired :app _initdb
-- initdb's own superuser (oid 10) can never lose SUPERUSER: when it is the app's login (an older
-- release), it is renamed out of the way and can no longer log in; the app gets a new role.
SELECT rolname = :'app' AS app_is_initdb_superuser FROM pg_roles WHERE oid = 10 \gset
\if :app_is_initdb_superuser
ALTER ROLE :"app" RENAME TO :"retired";
ALTER ROLE :"retired" WITH NOLOGIN PASSWORD NULL;
\endif
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') AS app_missing \gset
\if :app_missing
CREATE ROLE :"app";
\endif
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT
  PASSWORD :'app_password';
ALTER ROLE :"app" WITH :createrole;
ALTER DATABASE :"DBNAME" OWNER TO :"app";
SELECT set_config('hello_bot.app', :'app', false) AS app_set,
       set_config('hello_bot.retired', :'retired', false) AS retired_set \gset
-- Everything in the database the admin or the retired superuser owns becomes the app's (what
-- REASSIGN OWNED does, which refuses initdb's superuser), and the bot host's per-bot roles that
-- were granted to the retired superuser are granted to the app, which may grant them on.
DO $$
DECLARE
  app name := current_setting('hello_bot.app');
  previous oid[] := ARRAY(
    SELECT oid FROM pg_roles WHERE rolname IN (current_user, current_setting('hello_bot.retired'))
  );
  statement text;
BEGIN
  FOR statement IN
    SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, app)
    FROM pg_namespace
    WHERE nspowner = ANY (previous)
      AND nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
    UNION ALL
    SELECT format(
      'ALTER %s %s OWNER TO %I',
      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
        WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      c.oid::regclass, app)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relowner = ANY (previous)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
      -- a serial or identity column's sequence follows its table
      AND NOT EXISTS (
        SELECT FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
          AND c.relkind = 'S')
    UNION ALL
    SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, app)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typowner = ANY (previous) AND t.typtype IN ('e', 'd', 'r')
      AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, app)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.proowner = ANY (previous) AND p.prokind IN ('f', 'p')
      AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT format('GRANT %I TO %I WITH ADMIN OPTION', r.rolname, app)
    FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
    JOIN pg_roles retired ON retired.oid = m.member
    WHERE retired.rolname = current_setting('hello_bot.retired')
      AND NOT r.rolsuper AND r.rolname NOT LIKE 'pg\_%'
  LOOP
    EXECUTE statement;
  END LOOP;
END
$$;
SQL
echo "postgresql-roles: $APP_USER owns $PGDATABASE and is no superuser ($createrole); $ADMIN_USER administers"
