//! Which function calls are harmless.
//!
//! A function can do anything, including writing, so every call is suspect
//! unless it is a well-known read-only builtin on the allowlist below.
//! Builtins that read server files, run remote SQL, change settings or signal
//! other backends are *dangerous*: policy denies them unless a rule names
//! them explicitly.

use std::collections::HashSet;
use std::sync::LazyLock;

/// What the classifier makes of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A known-safe, read-only builtin: not reported.
    Safe,
    /// Not known to be safe: reported in `functions`, class at least Function.
    Unlisted,
    /// A dangerous builtin: reported in `functions` and `dangerous`, class Admin.
    Dangerous,
}

/// Read-only builtins that neither write, nor read outside the tables the
/// statement names, nor change session state. Matched only when called
/// unqualified or as `pg_catalog.name`: `public.lower` is somebody's own
/// function, not the builtin.
#[rustfmt::skip]
static SAFE: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    [
        // aggregates
        "count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg",
        "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every",
        "bit_and", "bit_or", "bit_xor", "stddev", "stddev_pop", "stddev_samp", "variance",
        "var_pop", "var_samp", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy",
        "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy",
        "regr_syy", "mode", "percentile_cont", "percentile_disc", "range_agg",
        "range_intersect_agg", "any_value", "json_agg_strict", "jsonb_agg_strict",
        "grouping",
        // window functions
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
        "lead", "first_value", "last_value", "nth_value",
        // strings
        "lower", "upper", "length", "char_length", "character_length", "octet_length",
        "bit_length", "substr", "substring", "trim", "btrim", "ltrim", "rtrim", "concat",
        "concat_ws", "replace", "split_part", "left", "right", "position", "strpos",
        "format", "initcap", "lpad", "rpad", "repeat", "reverse", "translate", "md5",
        "sha224", "sha256", "sha384", "sha512", "encode", "decode", "ascii", "chr",
        "quote_ident", "quote_literal", "quote_nullable", "regexp_replace", "regexp_match",
        "regexp_matches", "regexp_split_to_array", "regexp_split_to_table", "regexp_like",
        "regexp_count", "regexp_instr", "regexp_substr", "starts_with", "to_hex",
        "string_to_array", "string_to_table", "array_to_string", "overlay", "unistr",
        "normalize", "to_ascii", "convert_from", "convert_to", "text", "bpchar", "varchar",
        // what PostgreSQL's grammar calls for `x IS NORMALIZED`, `COLLATION FOR (x)`,
        // `OVERLAPS`, `LIKE ... ESCAPE`, `SIMILAR TO` and `XMLEXISTS`
        "is_normalized", "pg_collation_for", "overlaps", "like_escape", "similar_to_escape",
        "similar_escape", "xmlexists",
        // maths
        "abs", "round", "ceil", "ceiling", "floor", "trunc", "greatest", "least", "random",
        "random_normal", "sqrt", "cbrt", "power", "pow", "exp", "ln", "log", "log10", "mod",
        "sign", "pi", "degrees", "radians", "sin", "cos", "tan", "cot", "asin", "acos",
        "atan", "atan2", "sind", "cosd", "tand", "cotd", "asind", "acosd", "atand", "atan2d",
        "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "div", "gcd", "lcm", "factorial",
        "width_bucket", "scale", "min_scale", "trim_scale", "numeric", "int2", "int4",
        "int8", "float4", "float8", "bool",
        // date and time
        "now", "current_date", "current_time", "current_timestamp", "localtime",
        "localtimestamp", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
        "timeofday", "date_trunc", "date_part", "extract", "age", "to_char", "to_date",
        "to_timestamp", "to_number", "make_interval", "make_date", "make_time",
        "make_timestamp", "make_timestamptz", "justify_days", "justify_hours",
        "justify_interval", "isfinite", "date_bin", "date_add", "date_subtract", "date",
        "timezone",
        // JSON
        "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object",
        "jsonb_build_object", "json_build_array", "jsonb_build_array", "json_object",
        "jsonb_object", "json_array_length", "jsonb_array_length", "json_each", "jsonb_each",
        "json_each_text", "jsonb_each_text", "json_extract_path", "jsonb_extract_path",
        "json_extract_path_text", "jsonb_extract_path_text", "json_object_keys",
        "jsonb_object_keys", "json_populate_record", "jsonb_populate_record",
        "json_populate_recordset", "jsonb_populate_recordset", "json_to_record",
        "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset", "json_array_elements",
        "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
        "json_typeof", "jsonb_typeof", "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set",
        "jsonb_set_lax", "jsonb_insert", "jsonb_pretty", "jsonb_path_exists",
        "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
        "jsonb_path_query_first", "json_scalar", "json_serialize", "json_query",
        "json_value", "json_exists", "json_array", "json_arrayagg", "json_objectagg",
        // arrays and set-returning functions
        "array_length", "array_lower", "array_upper", "array_ndims", "array_dims",
        "array_position", "array_positions", "array_append", "array_prepend", "array_cat",
        "array_remove", "array_replace", "cardinality", "unnest", "array_fill", "trim_array",
        "generate_series", "generate_subscripts", "array",
        // conditional expressions and constructors
        "coalesce", "nullif", "row", "num_nulls", "num_nonnulls",
        // ranges
        "isempty", "lower_inc", "upper_inc", "lower_inf", "upper_inf", "range_merge",
        "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
        // full-text search
        "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
        "websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight", "strip",
        "tsvector_to_array", "array_to_tsvector", "numnode", "querytree",
        // network addresses
        "host", "hostmask", "netmask", "network", "broadcast", "masklen", "family", "abbrev",
        "set_masklen", "inet_same_family", "inet_merge",
        // UUIDs
        "gen_random_uuid",
        // session and system information (read-only)
        "version", "current_user", "session_user", "user", "current_role", "system_user",
        "current_database", "current_catalog", "current_schema", "current_schemas",
        "current_setting", "pg_typeof", "pg_backend_pid", "pg_postmaster_start_time",
        "pg_conf_load_time", "inet_client_addr", "inet_client_port", "inet_server_addr",
        "inet_server_port", "pg_jit_available", "pg_is_in_recovery",
        // catalog helpers used by psql and drivers
        "format_type", "obj_description", "col_description", "shobj_description",
        "pg_get_userbyid", "pg_table_is_visible", "pg_type_is_visible",
        "pg_function_is_visible", "pg_operator_is_visible", "pg_opclass_is_visible",
        "pg_opfamily_is_visible", "pg_collation_is_visible", "pg_conversion_is_visible",
        "pg_statistics_obj_is_visible", "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
        "pg_ts_parser_is_visible", "pg_ts_template_is_visible", "pg_get_expr",
        "pg_get_viewdef", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_triggerdef",
        "pg_get_ruledef", "pg_get_functiondef", "pg_get_function_arguments",
        "pg_get_function_identity_arguments", "pg_get_function_result", "pg_get_partkeydef",
        "pg_get_partition_constraintdef", "pg_get_statisticsobjdef_columns",
        "pg_get_serial_sequence", "pg_encoding_to_char", "pg_char_to_encoding",
        "pg_get_keywords", "has_table_privilege", "has_schema_privilege",
        "has_column_privilege", "has_any_column_privilege", "has_database_privilege",
        "has_function_privilege", "has_sequence_privilege", "has_tablespace_privilege",
        "has_type_privilege", "pg_has_role", "pg_relation_size", "pg_total_relation_size",
        "pg_table_size", "pg_indexes_size", "pg_database_size", "pg_size_pretty",
        "pg_size_bytes", "pg_column_size", "pg_tablespace_location", "to_regclass",
        "to_regtype", "to_regproc", "to_regprocedure", "to_regnamespace", "to_regrole",
        "to_regoper", "to_regoperator", "to_regcollation",
    ]
    .into_iter()
    .collect()
});

/// Dangerous builtins, matched by the last part of the name whatever the
/// schema: they read or write server files, run SQL elsewhere, change
/// settings, or act on other backends or the server itself.
#[rustfmt::skip]
static DANGEROUS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    [
        "pg_read_file", "pg_read_binary_file", "pg_stat_file", "set_config",
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_promote", "loread", "lowrite", "pg_logdir_ls", "pg_switch_wal",
        "pg_create_restore_point", "pg_backup_start", "pg_backup_stop", "pg_start_backup",
        "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume",
        "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
        "pg_drop_replication_slot", "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot", "pg_logical_slot_get_changes",
        "pg_logical_slot_peek_changes", "pg_logical_slot_get_binary_changes",
        "pg_logical_slot_peek_binary_changes", "pg_replication_slot_advance",
        "pg_logical_emit_message", "pg_log_backend_memory_contexts",
        "pg_import_system_collations", "pg_stat_reset", "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters", "pg_stat_reset_single_function_counters",
        "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
        "pg_stat_reset_subscription_stats",
    ]
    .into_iter()
    .collect()
});

/// Families of dangerous builtins: `dblink*` (remote SQL), `lo_*` (large
/// objects, including `lo_import`/`lo_export` of server files), `pg_ls_*`
/// (server directory listings), `pg_file_*` (adminpack file writes),
/// `pg_replication_origin_*`, and `copy_*`.
const DANGEROUS_PREFIXES: &[&str] = &[
    "dblink",
    "lo_",
    "pg_ls_",
    "pg_file_",
    "pg_replication_origin_",
    "copy_",
];

/// Judges a call by its normalised name parts (see `names::parts`).
pub(super) fn judge(parts: &[String]) -> Verdict {
    let Some(last) = parts.last() else {
        return Verdict::Unlisted;
    };
    if DANGEROUS.contains(last.as_str()) || DANGEROUS_PREFIXES.iter().any(|p| last.starts_with(p)) {
        return Verdict::Dangerous;
    }
    let builtin_path = match parts {
        [_] => true,
        [schema, _] => schema == "pg_catalog",
        _ => false,
    };
    if builtin_path && SAFE.contains(last.as_str()) {
        Verdict::Safe
    } else {
        Verdict::Unlisted
    }
}

/// Operators spelt with characters sqlparser does not know individually but
/// that are PostgreSQL builtins (network containment, text pattern
/// comparison, geometric positions). Any other custom operator may be backed
/// by any function and is reported as one.
#[rustfmt::skip]
static SAFE_CUSTOM_OPERATORS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    [
        
        "<<=", ">>=", "~<~", "~<=~", "~>=~", "~>~", "&<", "&>", "<<|", "|>>", "&<|", "|&>", "<^",
        ">^", "?#", "?-", "?-|", "?||", "~=", "@-@", "@@@", "<%", "%>", "<<%", "%>>",
    ]
    .into_iter()
    .collect()
});

/// Whether a custom operator (as sqlparser spells it) is a known builtin.
pub(super) fn safe_operator(op: &str) -> bool {
    SAFE_CUSTOM_OPERATORS.contains(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> Verdict {
        judge(&name.split('.').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn verdicts() {
        assert_eq!(v("lower"), Verdict::Safe);
        assert_eq!(v("pg_catalog.lower"), Verdict::Safe);
        assert_eq!(v("public.lower"), Verdict::Unlisted);
        assert_eq!(v("pg_sleep"), Verdict::Unlisted);
        assert_eq!(v("pg_read_file"), Verdict::Dangerous);
        assert_eq!(v("pg_catalog.pg_read_file"), Verdict::Dangerous);
        assert_eq!(v("dblink_exec"), Verdict::Dangerous);
        assert_eq!(v("lo_import"), Verdict::Dangerous);
        assert_eq!(v("PG_READ_FILE"), Verdict::Unlisted);
    }
}
