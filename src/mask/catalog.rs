//! The mask map: mask rules resolved to (table OID, attribute number) from a
//! database's own catalog, over a metadata connection of pgward's own (never
//! by injecting queries into a client's session).

use super::rules::MaskConfig;
use crate::io::FramedStream;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::upstream::query::query;
pub use crate::upstream::query::CatalogError;

/// One masked column, as the catalog names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedColumn {
    /// Index of the mask rule in [`MaskConfig::rules`].
    pub rule: usize,
    /// Schema.
    pub schema: String,
    /// Table (or materialized view, foreign table, partitioned table).
    pub table: String,
    /// Column.
    pub column: String,
    /// The column's type.
    pub type_oid: u32,
}

/// Everything masking needs to know about one database.
/// The map's lookups by OID run for every column of every result a masked
/// session reads: a fast keyed hash (seeded per map), not SipHash (about
/// 260 instructions a lookup).
pub type OidHasher = foldhash::fast::RandomState;

#[derive(Debug, Clone, Default)]
pub struct MaskMap {
    /// (table OID, attribute number) -> masked column.
    pub columns: HashMap<(u32, i16), MaskedColumn, OidHasher>,
    /// Views that read a masked column, as `(schema, name)`: their lineage is
    /// not resolved, so masked identities may not query them.
    pub views: BTreeSet<(String, String)>,
    /// Functions outside pg_catalog, by name: their bodies may read masked
    /// tables, so masked identities may not call them.
    pub functions: BTreeSet<String>,
    /// Every relation in the database when the map was read, as (schema,
    /// name) and by OID: a relation missing here is newer than the map, and
    /// masked identities wait for a refresh before they may use it.
    pub relations: BTreeSet<(String, String)>,
    /// OIDs of the relations above.
    pub relation_oids: std::collections::HashSet<u32, OidHasher>,
    /// Highest attribute number of each user table: a result column past it
    /// was added after the map was read.
    pub max_attnum: HashMap<u32, i16, OidHasher>,
    /// Relations whose reading runs code pgward does not see (views, whose
    /// bodies may call functions; foreign tables), as (schema, name).
    pub code_relations: BTreeSet<(String, String)>,
    /// Operators defined outside pg_catalog, by name: they run functions.
    pub operators: BTreeSet<String>,
    /// The server's own functions (pg_catalog and information_schema, with
    /// OIDs below 16384, FirstNormalObjectId: created by initdb), by name.
    /// A bare function name is the server's own only if it is in here and
    /// no other function has that name.
    pub builtin_functions: BTreeSet<String>,
    /// The mask rules the map was read under: `columns` resolves each
    /// column to a rule by its place in these rules, so the map answers
    /// for these rules only. `None` for a map not read from a catalog
    /// (tests).
    pub built_under: Option<Arc<MaskConfig>>,
}

impl MaskMap {
    /// Whether the map answers for `rules` (read under them, or not from a
    /// catalog at all).
    pub fn answers_for(&self, rules: &Arc<MaskConfig>) -> bool {
        self.built_under
            .as_ref()
            .is_none_or(|built| Arc::ptr_eq(built, rules))
    }
}

/// OIDs from here on are assigned to objects created after initdb: a
/// function in pg_catalog with such an OID was put there by someone.
pub const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

const COLUMNS_SQL: &str = "SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname, a.atttypid \
    FROM pg_catalog.pg_attribute a \
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm', 'f') \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Every inheritance edge (partitions included): a child holds rows of its
/// parent under a table OID of its own.
const INHERITS_SQL: &str = "SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits";

const RELATIONS_SQL: &str = "SELECT c.oid, n.nspname, c.relname, c.relkind \
    FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')";

/// Operators that are not the server's own (see [`FUNCTIONS_SQL`]).
const OPERATORS_SQL: &str = "SELECT DISTINCT o.oprname FROM pg_catalog.pg_operator o \
    JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') OR o.oid >= 16384";

const VIEW_DEPS_SQL: &str = "SELECT DISTINCT d.refobjid, d.refobjsubid, vn.nspname, v.relname \
    FROM pg_catalog.pg_depend d \
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
    JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
    JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
    WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
    AND v.oid <> d.refobjid AND v.relkind IN ('v', 'm')";

/// Functions that are not the server's own: outside pg_catalog and
/// information_schema, or inside them but created after initdb.
const FUNCTIONS_SQL: &str = "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p \
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') OR p.oid >= 16384";

const BUILTIN_FUNCTIONS_SQL: &str = "SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p \
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
    WHERE n.nspname IN ('pg_catalog', 'information_schema') AND p.oid < 16384";

/// Reads the catalog over `conn` and resolves `config`'s rules against it.
pub async fn load(conn: &mut FramedStream, config: &MaskConfig) -> Result<MaskMap, CatalogError> {
    // One snapshot for every query: a table created between two of them
    // would otherwise be known as a relation but not by its columns, and
    // its columns would go out unmasked.
    query(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let map = read(conn, config).await;
    query(conn, "COMMIT").await?;
    map
}

async fn read(conn: &mut FramedStream, config: &MaskConfig) -> Result<MaskMap, CatalogError> {
    let mut map = MaskMap::default();
    // Every user column by table, unmasked ones too: inheritance may mask
    // them below.
    let mut by_table: HashMap<u32, Vec<(i16, MaskedColumn)>> = HashMap::new();
    for row in query(conn, COLUMNS_SQL).await? {
        let [oid, attnum, schema, table, column, type_oid] = row.as_slice() else {
            return Err(CatalogError::Malformed("columns"));
        };
        let key = (number::<u32>(oid)?, number::<i16>(attnum)?);
        let max = map.max_attnum.entry(key.0).or_insert(0);
        *max = (*max).max(key.1);
        let rule = config
            .rules
            .iter()
            .position(|r| r.columns.iter().any(|p| p.covers(schema, table, column)));
        let entry = MaskedColumn {
            rule: rule.unwrap_or(usize::MAX),
            schema: schema.clone(),
            table: table.clone(),
            column: column.clone(),
            type_oid: number(type_oid)?,
        };
        if rule.is_some() {
            map.columns.insert(key, entry.clone());
        }
        by_table.entry(key.0).or_default().push((key.1, entry));
    }
    let mut edges = Vec::new();
    for row in query(conn, INHERITS_SQL).await? {
        let [child, parent] = row.as_slice() else {
            return Err(CatalogError::Malformed("inherits"));
        };
        edges.push((number::<u32>(child)?, number::<u32>(parent)?));
    }
    inherit_masks(&mut map.columns, &by_table, &edges);
    for row in query(conn, RELATIONS_SQL).await? {
        let [oid, schema, name, kind] = row.as_slice() else {
            return Err(CatalogError::Malformed("relations"));
        };
        map.relation_oids.insert(number::<u32>(oid)?);
        map.relations.insert((schema.clone(), name.clone()));
        if kind == "v" || kind == "f" {
            map.code_relations.insert((schema.clone(), name.clone()));
        }
    }
    for row in query(conn, OPERATORS_SQL).await? {
        if let [name] = row.as_slice() {
            map.operators.insert(name.clone());
        }
    }
    for row in query(conn, VIEW_DEPS_SQL).await? {
        let [table, attnum, schema, view] = row.as_slice() else {
            return Err(CatalogError::Malformed("views"));
        };
        let attnum = number::<i16>(attnum)?;
        let table = number::<u32>(table)?;
        // attnum 0 is a whole-row dependency: the view reads every column.
        let reads_masked = map
            .columns
            .keys()
            .any(|(t, a)| *t == table && (attnum == 0 || *a == attnum));
        if reads_masked {
            map.views.insert((schema.clone(), view.clone()));
        }
    }
    for row in query(conn, FUNCTIONS_SQL).await? {
        if let [name] = row.as_slice() {
            map.functions.insert(name.clone());
        }
    }
    for row in query(conn, BUILTIN_FUNCTIONS_SQL).await? {
        if let [name] = row.as_slice() {
            map.builtin_functions.insert(name.clone());
        }
    }
    Ok(map)
}

/// Masks a masked column's namesakes in every descendant of its table (the
/// partitions and inheritance children that hold the table's rows under
/// OIDs of their own) and every ancestor (whose reads return the table's
/// rows under the ancestor's OID). Columns are matched by name: a child's
/// attribute numbers may differ from its parent's (a partition attached
/// after a column was dropped). A column a rule masks keeps its rule; one
/// masked through several relations takes the first rule.
fn inherit_masks(
    columns: &mut HashMap<(u32, i16), MaskedColumn, OidHasher>,
    by_table: &HashMap<u32, Vec<(i16, MaskedColumn)>>,
    edges: &[(u32, u32)],
) {
    if edges.is_empty() {
        return;
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(child, parent) in edges {
        children.entry(parent).or_default().push(child);
        parents.entry(child).or_default().push(parent);
    }
    let mut direct: Vec<((u32, i16), MaskedColumn)> =
        columns.iter().map(|(k, c)| (*k, c.clone())).collect();
    direct.sort_by_key(|(k, c)| (c.rule, *k));
    for ((table, _), masked) in direct {
        // Down to every descendant, then up to every ancestor; never
        // sideways (a sibling partition holds other rows).
        for links in [&children, &parents] {
            let mut seen = BTreeSet::from([table]);
            let mut next = vec![table];
            while let Some(at) = next.pop() {
                for &to in links.get(&at).into_iter().flatten() {
                    if !seen.insert(to) {
                        continue;
                    }
                    next.push(to);
                    let same_name = by_table
                        .get(&to)
                        .into_iter()
                        .flatten()
                        .find(|(_, c)| c.column == masked.column);
                    if let Some((attnum, c)) = same_name {
                        columns
                            .entry((to, *attnum))
                            .or_insert_with(|| MaskedColumn {
                                rule: masked.rule,
                                ..c.clone()
                            });
                    }
                }
            }
        }
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, CatalogError> {
    text.parse().map_err(|_| CatalogError::Malformed("number"))
}
