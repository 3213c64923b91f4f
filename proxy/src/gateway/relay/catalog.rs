//! What the masked columns are in one target's catalog.
//!
//! RowDescription names a result column's source by table OID and attribute
//! number, and OIDs are per database: a policy's `public.customers.ssn` has
//! to be looked up in each target. The lookup runs on a connection of the
//! gateway's own (never a client's session) and is cached per target and
//! set of masked columns. It finds:
//!
//! * each masked column's (table OID, attribute number), also in
//!   inheritance children and partitions of its table;
//! * views and materialized views that read a table with masked columns,
//!   directly or through other views (`pg_depend` on their rewrite rules):
//!   their columns are reported with the view's own OID, so reading one is
//!   treated as derived;
//! * every relation's name and OID, so that a statement naming a relation
//!   the cache does not know (created since, perhaps by someone else)
//!   triggers a fresh lookup, and a result column from an unknown table OID
//!   is redacted rather than trusted;
//! * the string types (catalog category `S`, such as citext).
//!
//! DDL seen through the gateway invalidates a target's entries; so does a
//! result from an unknown table. If the lookup fails, masked statements are
//! denied.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use gatehouse_engine::mask::MaskPlan;
use gatehouse_engine::policy::CatalogNames;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::config::Target;
use crate::gateway::relay::upstream;
use crate::gateway::wire::frame::{self, read_frame};
use crate::gateway::wire::Stream;

/// Why a target's catalog could not be read.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The gateway's own connection failed.
    #[error("cannot connect to target {target} to read its catalog: {source}")]
    Connect {
        /// The target's name.
        target: String,
        /// What failed.
        source: upstream::UpstreamError,
    },
    /// The catalog query failed or its answer was malformed.
    #[error("reading the catalog of target {target} failed: {reason}")]
    Query {
        /// The target's name.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The lookup took too long.
    #[error("reading the catalog of target {target} took longer than {seconds} s")]
    Timeout {
        /// The target's name.
        target: String,
        /// The limit.
        seconds: u64,
    },
}

/// The masked columns of one plan, resolved in one target.
#[derive(Debug, Default)]
pub struct Resolved {
    /// (table OID, attribute number) → the plan's `schema.table.column`.
    pub columns: HashMap<(u32, i16), String>,
    /// Tables with masked columns (a whole-row result of one is redacted).
    pub masked_tables: HashMap<u32, String>,
    /// Views built on tables with masked columns, by OID.
    pub views: HashMap<u32, String>,
    /// The same views by `schema.name`, for the statement analysis.
    pub view_names: HashSet<String>,
    /// Every relation's `schema.name` when the lookup ran.
    pub relation_names: HashSet<String>,
    /// Every relation's OID when the lookup ran.
    pub relation_oids: HashSet<u32>,
    /// Type OIDs in catalog category `S` (strings).
    pub string_types: HashSet<u32>,
}

/// Longest a lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A statement naming relations the cache does not know triggers a new
/// lookup at most this often (a relation that does not exist would
/// otherwise cost a lookup per statement).
const UNKNOWN_NAME_RELOAD: Duration = Duration::from_secs(1);

/// Entries older than this are looked up again, bounding how long DDL done
/// outside the gateway goes unnoticed: a view replaced in the database
/// (to call a function that writes, say) is judged as it now is within a
/// second. The cost is at most one lookup per second per target, on the
/// statement that finds the entry old. Within that second the read-only
/// wall (a role without write privileges, or read-only transactions)
/// still stands for identities the policy keeps read-only.
const MAX_AGE: Duration = Duration::from_secs(1);

struct Entry {
    resolved: Arc<Resolved>,
    loaded: Instant,
}

#[derive(Default)]
struct TargetEntries {
    by_plan: HashMap<String, Entry>,
    /// What the target's views read, with when it was looked up.
    views: Option<(Arc<ViewReads>, Instant)>,
    /// Bumped by every invalidation; a lookup that started before one does
    /// not fill the cache.
    generation: u64,
}

/// The per-target catalog cache, shared by all sessions.
#[derive(Default)]
pub struct CatalogCache {
    targets: Mutex<HashMap<String, TargetEntries>>,
}

/// The cache key of a plan: its masked columns.
fn plan_key(plan: &MaskPlan) -> String {
    plan.columns.keys().cloned().collect::<Vec<_>>().join("\n")
}

impl CatalogCache {
    /// The plan's columns resolved in `target`, from the cache unless it is
    /// missing, older than a minute, or does not know one of `relations`
    /// (the statement's `schema.table` names).
    pub async fn resolve(
        &self,
        target: &Target,
        plan: &MaskPlan,
        relations: &[String],
    ) -> Result<Arc<Resolved>, CatalogError> {
        let key = plan_key(plan);
        let generation = {
            let mut targets = self.targets.lock().expect("catalog lock");
            let entries = targets.entry(target.name.clone()).or_default();
            if let Some(e) = entries.by_plan.get(&key) {
                if fresh(
                    e.loaded,
                    |r| e.resolved.relation_names.contains(r),
                    relations,
                ) {
                    return Ok(e.resolved.clone());
                }
            }
            entries.generation
        };
        let resolved = Arc::new(within_limit(target, lookup(target, plan)).await?);
        let mut targets = self.targets.lock().expect("catalog lock");
        let entries = targets.entry(target.name.clone()).or_default();
        if entries.generation == generation {
            entries.by_plan.insert(
                key,
                Entry {
                    resolved: resolved.clone(),
                    loaded: Instant::now(),
                },
            );
        }
        Ok(resolved)
    }

    /// What the views of `target` read (see [`ViewReads`]), from the cache
    /// under the same rules as [`CatalogCache::resolve`].
    pub async fn view_reads(
        &self,
        target: &Target,
        relations: &[String],
    ) -> Result<Arc<ViewReads>, CatalogError> {
        let generation = {
            let mut targets = self.targets.lock().expect("catalog lock");
            let entries = targets.entry(target.name.clone()).or_default();
            if let Some((reads, loaded)) = &entries.views {
                if fresh(
                    *loaded,
                    |r| reads.names.relations.contains_key(r),
                    relations,
                ) {
                    return Ok(reads.clone());
                }
            }
            entries.generation
        };
        self.look_up_views(target, generation).await
    }

    /// What the views of `target` read, looked up again unless the cached
    /// answer is younger than `age`: a statement naming something the
    /// cached catalog lacks asks before it is refused, since the name may
    /// have been created since.
    pub async fn view_reads_younger_than(
        &self,
        target: &Target,
        age: Duration,
    ) -> Result<Arc<ViewReads>, CatalogError> {
        let generation = {
            let mut targets = self.targets.lock().expect("catalog lock");
            let entries = targets.entry(target.name.clone()).or_default();
            if let Some((reads, loaded)) = &entries.views {
                if loaded.elapsed() < age {
                    return Ok(reads.clone());
                }
            }
            entries.generation
        };
        self.look_up_views(target, generation).await
    }

    async fn look_up_views(
        &self,
        target: &Target,
        generation: u64,
    ) -> Result<Arc<ViewReads>, CatalogError> {
        let reads = Arc::new(within_limit(target, view_lookup(target)).await?);
        let mut targets = self.targets.lock().expect("catalog lock");
        let entries = targets.entry(target.name.clone()).or_default();
        if entries.generation == generation {
            entries.views = Some((reads.clone(), Instant::now()));
        }
        Ok(reads)
    }

    /// Forgets what is known of `target` (after DDL, or a result from a
    /// table the cache did not know).
    pub fn invalidate(&self, target: &str) {
        let mut targets = self.targets.lock().expect("catalog lock");
        let entries = targets.entry(target.to_owned()).or_default();
        entries.by_plan.clear();
        entries.views = None;
        entries.generation += 1;
    }
}

/// Runs a lookup of `target`, failing it after [`LOOKUP_TIMEOUT`].
async fn within_limit<T>(
    target: &Target,
    lookup: impl std::future::Future<Output = Result<T, CatalogError>>,
) -> Result<T, CatalogError> {
    tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(CatalogError::Timeout {
                target: target.name.clone(),
                seconds: LOOKUP_TIMEOUT.as_secs(),
            })
        })
}

/// Whether an entry loaded at `loaded`, knowing `known` relations, may
/// answer for a statement naming `relations`: younger than [`MAX_AGE`], and
/// knowing them all (or looked up less than a second ago).
fn fresh(loaded: Instant, known: impl Fn(&str) -> bool, relations: &[String]) -> bool {
    let age = loaded.elapsed();
    let unknown = relations.iter().any(|r| !known(r));
    age < MAX_AGE && (!unknown || age < UNKNOWN_NAME_RELOAD)
}

/// What each view and materialized view of a target reads, through other
/// views too, from `pg_depend` on their rewrite rules: so that a rule on
/// `public.customers.ssn` also holds for `SELECT tax_id FROM people` where
/// `people` is a view selecting `ssn AS tax_id`.
#[derive(Debug, Default)]
pub struct ViewReads {
    /// `schema.view` → the base columns it reads, `schema.table.column`, or
    /// `schema.table.*` where it depends on a whole row.
    pub views: HashMap<String, Vec<String>>,
    /// `schema.view` → the functions it calls, `schema.function` (through
    /// views of views too): judged as calls of the statement that names it.
    pub calls: HashMap<String, Vec<String>>,
    /// Every relation a statement can name (tables, views, materialized
    /// views, partitioned and foreign tables, sequences) with its columns;
    /// temporary ones, of any session, under `pg_temp`.
    pub names: CatalogNames,
}

/// Looks up [`ViewReads`] on a connection of the gateway's own.
async fn view_lookup(target: &Target) -> Result<ViewReads, CatalogError> {
    let sql = "WITH RECURSIVE dep(view, relid, attnum) AS (
        SELECT r.ev_class, d.refobjid, d.refobjsubid
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND d.refobjid <> r.ev_class
      ),
      reach(view, relid, attnum) AS (
        SELECT view, relid, attnum FROM dep
        UNION
        SELECT r.view, d.relid, d.attnum FROM reach r JOIN dep d ON d.view = r.relid
      ),
      viewed(view, via) AS (
        SELECT oid, oid FROM pg_catalog.pg_class WHERE relkind IN ('v', 'm')
        UNION
        SELECT view, relid FROM reach
      )
      SELECT 'v', vn.nspname || '.' || v.relname,
             bn.nspname || '.' || b.relname || '.' || coalesce(a.attname, '*')
        FROM reach x
        JOIN pg_catalog.pg_class v ON v.oid = x.view
        JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
        JOIN pg_catalog.pg_class b ON b.oid = x.relid
        JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace
        LEFT JOIN pg_catalog.pg_attribute a
          ON a.attrelid = x.relid AND a.attnum = x.attnum AND x.attnum > 0
       WHERE v.relkind IN ('v', 'm') AND b.relkind IN ('r', 'p', 'f')
      UNION ALL
      SELECT DISTINCT 'f', vn.nspname || '.' || v.relname, fn.nspname || '.' || f.proname
        FROM viewed x
        JOIN pg_catalog.pg_rewrite r ON r.ev_class = x.via
        JOIN pg_catalog.pg_depend d ON d.objid = r.oid
         AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
         AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
        JOIN pg_catalog.pg_proc f ON f.oid = d.refobjid
        JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
        JOIN pg_catalog.pg_class v ON v.oid = x.view
        JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
       WHERE v.relkind IN ('v', 'm')
      UNION ALL
      SELECT 'r',
             CASE WHEN n.nspname LIKE 'pg\\_temp\\_%' THEN 'pg_temp' ELSE n.nspname END
               || '.' || c.relname,
             a.attname::pg_catalog.text
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_catalog.pg_attribute a
          ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
      UNION ALL
      SELECT DISTINCT 'n', p.proname::pg_catalog.text, NULL
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
       WHERE p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
         AND t.typtype IN ('c', 'p')";
    let rows = query_once(target, sql).await?;
    let mut reads = ViewReads::default();
    for row in rows {
        match row.as_slice() {
            [Some(kind), Some(view), Some(column)] if kind == "v" => reads
                .views
                .entry(view.clone())
                .or_default()
                .push(column.clone()),
            [Some(kind), Some(view), Some(function)] if kind == "f" => reads
                .calls
                .entry(view.clone())
                .or_default()
                .push(function.clone()),
            [Some(kind), Some(relation), column] if kind == "r" => {
                reads.names.add(relation, column.as_deref());
            }
            [Some(kind), Some(function), None] if kind == "n" => {
                reads.names.row_functions.insert(function.clone());
            }
            _ => {
                return Err(CatalogError::Query {
                    target: target.name.clone(),
                    reason: "unexpected row in the view lookup".to_owned(),
                })
            }
        }
    }
    for names in reads.views.values_mut().chain(reads.calls.values_mut()) {
        names.sort();
        names.dedup();
    }
    Ok(reads)
}

/// A text literal PostgreSQL reads the same whatever its settings: the
/// UTF-8 bytes in hex, decoded server-side.
fn literal(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
}

/// The lookup query for `plan` (see the module documentation).
fn lookup_sql(plan: &MaskPlan) -> String {
    let wanted: Vec<String> = plan
        .columns
        .keys()
        .enumerate()
        .filter_map(|(i, c)| {
            let mut parts = c.splitn(3, '.');
            let (s, t, col) = (parts.next()?, parts.next()?, parts.next()?);
            Some(format!(
                "({i}, {}, {}, {})",
                literal(s),
                literal(t),
                literal(col)
            ))
        })
        .collect();
    let wanted = if wanted.is_empty() {
        "SELECT NULL::int, NULL::text, NULL::text, NULL::text WHERE false".to_owned()
    } else {
        format!("VALUES {}", wanted.join(", "))
    };
    format!(
        "WITH RECURSIVE wanted(i, nsp, rel, att) AS ({wanted}),
tree(i, att, relid) AS (
    SELECT w.i, w.att, c.oid FROM wanted w
    JOIN pg_catalog.pg_namespace n ON n.nspname = w.nsp
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.rel
  UNION
    SELECT t.i, t.att, inh.inhrelid FROM tree t
    JOIN pg_catalog.pg_inherits inh ON inh.inhparent = t.relid
),
cols AS (
    SELECT t.i, t.relid, a.attnum FROM tree t
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid AND a.attname = t.att
     AND a.attnum > 0 AND NOT a.attisdropped
),
tainted(relid) AS (
    SELECT r.ev_class FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refobjid IN (SELECT relid FROM cols)
  UNION
    SELECT r.ev_class FROM tainted t
    JOIN pg_catalog.pg_depend d ON d.refobjid = t.relid
     AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
)
SELECT 'c', c.i::text, c.relid::text, c.attnum::text, n.nspname || '.' || k.relname
  FROM cols c JOIN pg_catalog.pg_class k ON k.oid = c.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
UNION ALL
SELECT 'v', NULL, k.oid::text, NULL, n.nspname || '.' || k.relname
  FROM (SELECT DISTINCT relid FROM tainted) t
  JOIN pg_catalog.pg_class k ON k.oid = t.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
  WHERE k.relkind IN ('v', 'm') AND t.relid NOT IN (SELECT relid FROM cols)
UNION ALL
SELECT 'r', NULL, k.oid::text, NULL, n.nspname || '.' || k.relname
  FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
  WHERE k.relkind IN ('r', 'v', 'm', 'p', 'f')
UNION ALL
SELECT 's', NULL, t.oid::text, NULL, NULL
  FROM pg_catalog.pg_type t WHERE t.typcategory = 'S'"
    )
}

/// Runs the lookup on a fresh connection of the gateway's own.
async fn lookup(target: &Target, plan: &MaskPlan) -> Result<Resolved, CatalogError> {
    let rows = query_once(target, &lookup_sql(plan)).await?;
    let names: Vec<&String> = plan.columns.keys().collect();
    parse_lookup(&rows, &names).map_err(|reason| CatalogError::Query {
        target: target.name.clone(),
        reason,
    })
}

/// Runs one catalog query on a fresh read-only connection of the
/// gateway's own (never a client's session; as the target's read-only
/// login when it has one), then closes it.
async fn query_once(target: &Target, sql: &str) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
    let mut conn = upstream::connect(target, true, upstream::Purpose::Catalog)
        .await
        .map_err(|source| CatalogError::Connect {
            target: target.name.clone(),
            source,
        })?;
    let rows = query_rows(conn.stream.as_mut(), sql)
        .await
        .map_err(|reason| CatalogError::Query {
            target: target.name.clone(),
            reason,
        })?;
    let mut terminate = BytesMut::new();
    terminate.put_u8(b'X');
    terminate.put_i32(4);
    let _ = conn.stream.write_all(&terminate).await;
    Ok(rows)
}

/// Builds the resolved catalog from the lookup's rows.
fn parse_lookup(rows: &[Vec<Option<String>>], names: &[&String]) -> Result<Resolved, String> {
    let mut r = Resolved::default();
    let oid = |v: &Option<String>| -> Result<u32, String> {
        v.as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("malformed OID {v:?}"))
    };
    for row in rows {
        let [kind, index, relid, attnum, relname] = row.as_slice() else {
            return Err(format!("unexpected row of {} columns", row.len()));
        };
        match kind.as_deref() {
            Some("c") => {
                let i: usize = index
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .ok_or("malformed column index")?;
                let name = names.get(i).ok_or("column index out of range")?;
                let attnum: i16 = attnum
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .ok_or("malformed attribute number")?;
                let relid = oid(relid)?;
                r.columns.insert((relid, attnum), (*name).clone());
                r.masked_tables
                    .insert(relid, relname.clone().unwrap_or_default());
            }
            Some("v") => {
                let name = relname.clone().unwrap_or_default();
                r.views.insert(oid(relid)?, name.clone());
                r.view_names.insert(name);
            }
            Some("r") => {
                r.relation_oids.insert(oid(relid)?);
                r.relation_names.insert(relname.clone().unwrap_or_default());
            }
            Some("s") => {
                r.string_types.insert(oid(relid)?);
            }
            other => return Err(format!("unexpected row kind {other:?}")),
        }
    }
    Ok(r)
}

/// Every relation of `target` a policy can name (tables, views,
/// materialized views, partitioned and foreign tables) with its columns, for
/// checking the names in a policy before it is applied.
pub async fn relation_names(target: &Target) -> Result<CatalogNames, CatalogError> {
    let sql = "SELECT n.nspname || '.' || c.relname, a.attname
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_catalog.pg_attribute a
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')";
    let rows = within_limit(target, query_once(target, sql)).await?;
    let mut names = CatalogNames::default();
    for row in &rows {
        if let [Some(relation), column] = row.as_slice() {
            names.add(relation, column.as_deref());
        }
    }
    Ok(names)
}

/// What `target`'s read-only login may change: role attributes, table,
/// sequence, schema and database privileges that let it write or create
/// (at most 20, each as "PRIVILEGE on OBJECT"). Empty for a role that can
/// only read.
pub async fn write_privileges(target: &Target) -> Result<Vec<String>, CatalogError> {
    let sql = "SELECT w FROM (
        SELECT unnest(ARRAY[
            CASE WHEN rolsuper THEN 'SUPERUSER' END,
            CASE WHEN rolcreaterole THEN 'CREATEROLE' END,
            CASE WHEN rolcreatedb THEN 'CREATEDB' END,
            CASE WHEN rolbypassrls THEN 'BYPASSRLS' END]) || ' (role attribute)' AS w
          FROM pg_catalog.pg_roles WHERE rolname = current_user
        UNION ALL
        SELECT p || ' on ' || n.nspname || '.' || c.relname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
           AND pg_catalog.has_table_privilege(c.oid, p)
        UNION ALL
        SELECT p || ' on sequence ' || n.nspname || '.' || c.relname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['USAGE', 'UPDATE']) p
         WHERE c.relkind = 'S'
           AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
           AND pg_catalog.has_sequence_privilege(c.oid, p)
        UNION ALL
        SELECT 'CREATE on schema ' || n.nspname FROM pg_catalog.pg_namespace n
         WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
           AND pg_catalog.has_schema_privilege(n.oid, 'CREATE')
        UNION ALL
        SELECT 'CREATE on database ' || current_database()
         WHERE pg_catalog.has_database_privilege(current_database(), 'CREATE')
      ) found WHERE w IS NOT NULL LIMIT 20";
    let rows = within_limit(target, query_once(target, sql)).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// Runs one simple query and returns its rows as text.
async fn query_rows(
    stream: &mut dyn Stream,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut q = BytesMut::from(sql.as_bytes());
    q.put_u8(0);
    stream
        .write_all(&frame::message(b'Q', &q))
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let f = read_frame(stream, 1 << 26)
            .await
            .map_err(|e| e.to_string())?;
        match f.tag() {
            b'D' => {
                let values = frame::data_row_values(f.body()).ok_or("malformed DataRow")?;
                rows.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect(),
                );
            }
            b'E' => {
                let fields = frame::error_fields(f.body());
                error = fields
                    .iter()
                    .find(|(c, _)| *c == b'M')
                    .map(|(_, m)| m.clone())
                    .or(Some("an error".to_owned()));
            }
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_escape_their_quotes() {
        let l = literal("a'b\\c");
        assert_eq!(l, "convert_from(decode('6127625c63', 'hex'), 'UTF8')");
    }

    #[test]
    fn lookup_rows_are_parsed_and_checked() {
        let s = |v: &str| Some(v.to_owned());
        let ssn = "public.customers.ssn".to_owned();
        let names = vec![&ssn];
        let rows = vec![
            vec![s("c"), s("0"), s("16384"), s("4"), s("public.customers")],
            vec![s("v"), None, s("16400"), None, s("public.contacts")],
            vec![s("r"), None, s("16384"), None, s("public.customers")],
            vec![s("s"), None, s("25"), None, None],
        ];
        let r = parse_lookup(&rows, &names).unwrap();
        assert_eq!(r.columns.get(&(16384, 4)), Some(&ssn));
        assert!(r.masked_tables.contains_key(&16384));
        assert!(r.view_names.contains("public.contacts"));
        assert!(r.relation_oids.contains(&16384));
        assert!(r.string_types.contains(&25));
        let bad = vec![vec![s("c"), s("7"), s("1"), s("1"), None]];
        assert!(parse_lookup(&bad, &names).is_err());
        let bad = vec![vec![s("x"), None, None, None, None]];
        assert!(parse_lookup(&bad, &names).is_err());
    }
}
