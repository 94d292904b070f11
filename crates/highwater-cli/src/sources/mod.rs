//! Turns the pipeline file's `[[resources]]` into library resources: every key maps onto the
//! library API, so the command and the library share one implementation of each semantic.

pub mod files;
mod read_ahead;
pub mod rest_api;
pub mod sql;

use anyhow::{anyhow, bail, Result};
use highwater::incremental::CursorKind;
use highwater::{
    Bound, ColumnHint, DataType, Hints, Incremental, LastValueFunc, MergeStrategy, OnCursorMissing,
    ReplaceStrategy, Resource, RowOrder, Scd2Options, SortOrder, Source, TableName,
    WriteDisposition,
};
use toml::Spanned;

use crate::config::{choice, toml_to_json, LoadedConfig, ResourceConfig};

/// The source of the file's resources (the pipeline's default source: named after the pipeline,
/// or after the dlt source of a dataset taken over): the `selected` ones, or all
/// when none is selected. Only those are built, so an unselected `sql` resource does not connect.
/// A file resource whose glob matches no file is left out (with a warning), so it commits
/// nothing; the source may then hold no resource at all.
pub fn build_source(config: &LoadedConfig, selected: &[String]) -> Result<Source> {
    for name in selected {
        crate::commands::check_resource(config, name)?;
    }
    let mut resources = Vec::new();
    for resource in &config.file.resources {
        if selected.is_empty() || selected.contains(&resource.name) {
            resources.extend(build_resource(config, resource)?);
        }
    }
    Ok(Source::new("", resources))
}

/// The resource, or `None` for files whose glob matches nothing.
fn build_resource(config: &LoadedConfig, r: &ResourceConfig) -> Result<Option<Resource>> {
    let kind = choice(
        config,
        "kind",
        &r.source.kind,
        &["jsonl", "json", "csv", "parquet", "rest_api", "sql"],
    )?;
    if kind == "sql" {
        return sql_resource(config, r).map(Some);
    }
    if kind == "rest_api" {
        let resource = rest_api::rest_resource(&r.name, rest_config(config, r)?)
            .with_hints(build_hints(config, r)?);
        return with_incremental(config, r, resource).map(Some);
    }
    let path = r.source.path.as_ref().ok_or_else(|| {
        anyhow!(
            "{}: resource {}: source kind {kind:?} needs a path",
            config.at(&r.source.kind),
            r.name
        )
    })?;
    let format = match kind {
        "jsonl" => files::FileFormat::Jsonl,
        "csv" => files::FileFormat::Csv,
        "parquet" => files::FileFormat::Parquet,
        _ => files::FileFormat::Json,
    };
    if r.source.infer_types.is_some() && format != files::FileFormat::Csv {
        bail!(
            "{}: resource {}: infer_types is a csv setting, not one of {kind:?}",
            config.at(&r.source.kind),
            r.name
        );
    }
    let pattern = config.resolve(path.get_ref());
    if !files::is_glob(path.get_ref()) {
        if !pattern.is_file() {
            bail!(
                "{}: resource {}: path {:?} does not exist ({})",
                config.at(path),
                r.name,
                path.get_ref(),
                pattern.display()
            );
        }
    } else if files::matching_files(&pattern)?.is_empty() {
        if r.source.require_files {
            bail!(
                "{}: resource {}: no file matches path {:?} ({}) and require_files = true",
                config.at(path),
                r.name,
                path.get_ref(),
                pattern.display()
            );
        }
        tracing::warn!(
            "{}: resource {}: no file matches path {:?} ({}); nothing is loaded for it \
             (require_files = true makes this an error)",
            config.at(path),
            r.name,
            path.get_ref(),
            pattern.display()
        );
        return Ok(None);
    }
    let csv = files::CsvOptions {
        all_text: r.source.infer_types == Some(false),
        hinted_columns: r
            .columns
            .iter()
            .filter(|(_, c)| c.data_type.is_some())
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let resource = files::file_resource(&r.name, pattern, format, r.source.skip_loaded_files, csv)
        .with_hints(build_hints(config, r)?);
    with_incremental(config, r, resource).map(Some)
}

/// A `sql` resource: the table's reflected hints, overridden field by field by the file's.
fn sql_resource(config: &LoadedConfig, r: &ResourceConfig) -> Result<Resource> {
    let src = &r.source;
    let at = config.at(&src.kind);
    let connection = src
        .connection
        .as_deref()
        .ok_or_else(|| anyhow!("{at}: resource {}: sql needs a connection", r.name))?;
    let connection = config.resolve_secrets(connection)?;
    crate::redact::register_credentials(Some(&connection));
    let connection = sql::Connection::parse(&connection, &config.base)
        .map_err(|e| anyhow!("{at}: resource {}: {e}", r.name))?;
    let selection = match (&src.table, &src.query) {
        (Some(table), None) => sql::Selection::Table(table.clone()),
        (None, Some(query)) => sql::Selection::Query(query.clone()),
        _ => bail!(
            "{at}: resource {}: sql needs exactly one of table or query",
            r.name
        ),
    };
    let chunk_size = match src.chunk_size {
        Some(0) => bail!("{at}: resource {}: chunk_size must be at least 1", r.name),
        Some(n) => n,
        None => 50_000,
    };
    let pushdown = match &r.incremental {
        Some(inc) => {
            let min = inc.last_value_func.as_ref().map(|f| f.as_ref().as_str()) == Some("min");
            Some(sql::Pushdown {
                column: inc.cursor_path.clone(),
                min,
                start_open: inc.range_start.as_ref().map(|v| v.as_ref().as_str()) == Some("open"),
                end_closed: inc.range_end.as_ref().map(|v| v.as_ref().as_str()) == Some("closed"),
                on_missing: match inc
                    .on_cursor_value_missing
                    .as_ref()
                    .map(|v| v.as_ref().as_str())
                {
                    Some("include") => OnCursorMissing::Include,
                    Some("exclude") => OnCursorMissing::Exclude,
                    _ => OnCursorMissing::Raise,
                },
                descending: match inc.row_order.as_ref().map(|v| v.as_ref().as_str()) {
                    Some("asc") => min,
                    Some("desc") => !min,
                    _ => min,
                },
            })
        }
        None => None,
    };
    let source = sql::SqlSource {
        connection,
        selection,
        chunk_size,
        pushdown,
    };
    let reflection = sql::reflect(&source)
        .map_err(|e| anyhow!("resource {}: reading the table's columns: {e}", r.name))?;
    let reflected = reflection.hints();
    let mut hints = build_hints(config, r)?;
    for (name, hint) in &mut hints.columns {
        if let Some(base) = reflected.columns.get(name) {
            *hint = hint.merged_over(base);
        }
    }
    let resource = sql::sql_resource(&r.name, source, reflection);
    let hints = resource.hints().overridden_by(&hints);
    with_incremental(config, r, resource.with_hints(hints))
}

/// Attaches the `[resources.incremental]` table.
fn with_incremental(
    config: &LoadedConfig,
    r: &ResourceConfig,
    mut resource: Resource,
) -> Result<Resource> {
    if let Some(inc) = &r.incremental {
        let mut incremental = Incremental::new(&inc.cursor_path)
            .map_err(|e| anyhow!("{}: resource {}: {e}", config.path.display(), r.name))?;
        let field = highwater::incremental::CursorPath::parse(&inc.cursor_path)
            .ok()
            .and_then(|p| p.single_field().map(str::to_string));
        let hinted = field
            .and_then(|f| resource.hints().columns.get(&f).and_then(|h| h.data_type))
            .and_then(CursorKind::from_data_type);
        for (key, bound) in [
            ("initial_value", &inc.initial_value),
            ("end_value", &inc.end_value),
        ] {
            if let (Some(bound), Some(kind)) = (bound, hinted) {
                check_bound(config, r, key, bound, kind)?;
            }
        }
        if let Some(v) = &inc.initial_value {
            incremental = incremental.initial_value(toml_to_json(v.get_ref()));
        }
        if let Some(v) = &inc.end_value {
            incremental = incremental.end_value(toml_to_json(v.get_ref()));
        }
        if let Some(f) = &inc.last_value_func {
            incremental = incremental.last_value_func(
                match choice(config, "last_value_func", f, &["max", "min"])? {
                    "min" => LastValueFunc::Min,
                    _ => LastValueFunc::Max,
                },
            );
        }
        if let Some(key) = &inc.primary_key {
            incremental = incremental.primary_key(key.clone());
        }
        let bound = |b: &str| {
            if b == "open" {
                Bound::Open
            } else {
                Bound::Closed
            }
        };
        if let Some(v) = &inc.range_start {
            incremental = incremental.range_start(bound(choice(
                config,
                "range_start",
                v,
                &["closed", "open"],
            )?));
        }
        if let Some(v) = &inc.range_end {
            incremental =
                incremental.range_end(bound(choice(config, "range_end", v, &["closed", "open"])?));
        }
        if let Some(v) = &inc.row_order {
            incremental =
                incremental.row_order(match choice(config, "row_order", v, &["asc", "desc"])? {
                    "desc" => RowOrder::Desc,
                    _ => RowOrder::Asc,
                });
        }
        if let Some(v) = &inc.on_cursor_value_missing {
            incremental = incremental.on_cursor_value_missing(
                match choice(
                    config,
                    "on_cursor_value_missing",
                    v,
                    &["raise", "include", "exclude"],
                )? {
                    "include" => OnCursorMissing::Include,
                    "exclude" => OnCursorMissing::Exclude,
                    _ => OnCursorMissing::Raise,
                },
            );
        }
        if let Some(lag) = inc.lag {
            incremental = incremental.lag(lag);
        }
        incremental = incremental.allow_external_schedulers(inc.allow_external_schedulers);
        resource = resource.incremental(incremental);
    }
    Ok(resource)
}

/// An `initial_value` / `end_value` of a cursor whose type a hint gives must be of that type
/// as written: `20240101` or `"yesterday"` for a timestamp cursor is a mistake, named with its
/// line and an example of what fits.
fn check_bound(
    config: &LoadedConfig,
    r: &ResourceConfig,
    key: &str,
    bound: &toml::Spanned<toml::Value>,
    kind: CursorKind,
) -> Result<()> {
    use highwater::incremental::CursorValue;
    let fits = match (bound.get_ref(), kind) {
        (toml::Value::Datetime(d), CursorKind::Timestamp) => d.date.is_some(),
        (toml::Value::Datetime(d), CursorKind::Date) => d.date.is_some(),
        (toml::Value::Integer(_) | toml::Value::Float(_), CursorKind::Number) => true,
        (toml::Value::String(s), kind) => CursorValue::parse_str(s, kind).is_some(),
        _ => false,
    };
    if fits {
        return Ok(());
    }
    bail!(
        "{}: resource {}: {key} = {} is not a {kind}: the cursor {} is a {kind} column; {}",
        config.at(bound),
        r.name,
        bound.get_ref(),
        r.incremental
            .as_ref()
            .map_or("", |i| i.cursor_path.as_str()),
        bound_example(key, kind),
        kind = kind.name(),
    )
}

/// A run's error in the pipeline file's terms: an `initial_value` / `end_value` the cursor's
/// values showed to be of the wrong type is named with its line.
pub fn explain_run_error(config: &LoadedConfig, error: highwater::Error) -> anyhow::Error {
    let highwater::Error::BoundType {
        resource,
        cursor_path,
        key,
        value,
        expected,
    } = &error
    else {
        return error.into();
    };
    let spanned = config
        .file
        .resources
        .iter()
        .find(|r| &r.name == resource)
        .and_then(|r| r.incremental.as_ref())
        .and_then(|inc| match *key {
            "initial_value" => inc.initial_value.as_ref(),
            _ => inc.end_value.as_ref(),
        });
    let kind = [
        CursorKind::Timestamp,
        CursorKind::Date,
        CursorKind::Number,
        CursorKind::Text,
    ]
    .into_iter()
    .find(|k| k.name() == *expected);
    match (spanned, kind) {
        (Some(spanned), Some(kind)) => anyhow!(
            "{}: resource {resource}: {key} = {value} is not a {expected}: the values of cursor \
             {cursor_path} are of type {expected}; {}",
            config.at(spanned),
            bound_example(key, kind)
        ),
        _ => error.into(),
    }
}

/// What a bound of `kind` looks like in the pipeline file.
pub fn bound_example(key: &str, kind: CursorKind) -> String {
    match kind {
        CursorKind::Timestamp => format!(
            "write an ISO 8601 timestamp, e.g. {key} = 2024-01-01T00:00:00Z or {key} = \"2024-01-01T00:00:00+02:00\""
        ),
        CursorKind::Date => format!("write a date, e.g. {key} = 2024-01-01"),
        CursorKind::Number => format!("write a number, e.g. {key} = 0"),
        CursorKind::Text => format!("write a string, e.g. {key} = \"a\""),
    }
}

/// The `rest_api` keys of `[resources.source]`, secrets resolved.
fn rest_config(config: &LoadedConfig, r: &ResourceConfig) -> Result<rest_api::RestApi> {
    use highwater::incremental::CursorPath;
    let src = &r.source;
    let at = config.at(&src.kind);
    let path =
        |p: &str| CursorPath::parse(p).map_err(|e| anyhow!("{at}: resource {}: {e}", r.name));
    let url = config.resolve_secrets(
        src.url
            .as_deref()
            .ok_or_else(|| anyhow!("{at}: resource {}: rest_api needs a url", r.name))?,
    )?;
    let mut params = indexmap::IndexMap::new();
    for (k, v) in &src.params {
        let text = match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        params.insert(k.clone(), config.resolve_secrets(&text)?);
    }
    let mut headers = indexmap::IndexMap::new();
    for (k, v) in &src.headers {
        headers.insert(k.clone(), config.resolve_secrets(v)?);
    }
    let bearer = match &src.auth {
        Some(auth) => {
            choice(config, "auth type", &auth.kind, &["bearer"])?;
            Some(config.resolve_secrets(&auth.token)?)
        }
        None => None,
    };
    let paginator = match &src.paginator {
        None => None,
        Some(p) => Some(
            match choice(
                config,
                "paginator type",
                &p.kind,
                &[
                    "json_link",
                    "header_link",
                    "offset",
                    "page_number",
                    "cursor",
                    "single_page",
                ],
            )? {
                "json_link" => rest_api::Paginator::JsonLink {
                    next_url_path: path(p.next_url_path.as_deref().unwrap_or("next"))?,
                },
                "header_link" => rest_api::Paginator::HeaderLink,
                "offset" => rest_api::Paginator::Offset {
                    limit: p.limit.ok_or_else(|| {
                        anyhow!("{}: the offset paginator needs a limit", config.at(&p.kind))
                    })?,
                    offset: p.offset.unwrap_or(0),
                    offset_param: p.offset_param.clone().unwrap_or_else(|| "offset".into()),
                    limit_param: p.limit_param.clone().unwrap_or_else(|| "limit".into()),
                    total_path: p.total_path.as_deref().map(path).transpose()?,
                },
                "page_number" => rest_api::Paginator::PageNumber {
                    base_page: p.base_page.unwrap_or(0),
                    page_param: p.page_param.clone().unwrap_or_else(|| "page".into()),
                    total_path: p.total_path.as_deref().map(path).transpose()?,
                },
                "cursor" => rest_api::Paginator::Cursor {
                    cursor_path: path(p.cursor_path.as_deref().unwrap_or("cursors.next"))?,
                    cursor_param: p.cursor_param.clone().unwrap_or_else(|| "cursor".into()),
                },
                _ => rest_api::Paginator::SinglePage,
            },
        ),
    };
    Ok(rest_api::RestApi {
        url,
        params,
        headers,
        bearer,
        data_selector: src.data_selector.as_deref().map(path).transpose()?,
        paginator,
    })
}

/// A `replace_strategy` key's value.
pub fn replace_strategy(config: &LoadedConfig, value: &Spanned<String>) -> Result<ReplaceStrategy> {
    let name = choice(
        config,
        "replace_strategy",
        value,
        &[
            "truncate-and-insert",
            "insert-from-staging",
            "staging-optimized",
        ],
    )?;
    ReplaceStrategy::parse(name)
        .ok_or_else(|| anyhow!("{}: unknown replace_strategy", config.at(value)))
}

/// The scd2 keys of a resource; an error naming the key and its line when they are given
/// without `merge_strategy = "scd2"` or are malformed.
fn scd2_options(
    config: &LoadedConfig,
    r: &ResourceConfig,
    strategy: Option<MergeStrategy>,
) -> Result<Option<Scd2Options>> {
    let mut options = Scd2Options::default();
    let mut first_key: Option<(&str, String)> = None;
    let mut seen = |key: &'static str, at: String| {
        first_key.get_or_insert((key, at));
    };
    if let Some(names) = &r.validity_column_names {
        seen("validity_column_names", config.at(names));
        match names.get_ref().as_slice() {
            [from, to] => options.validity_column_names = Some((from.clone(), to.clone())),
            other => bail!(
                "{}: resource {}: validity_column_names needs two names (valid from, valid to), not {}",
                config.at(names),
                r.name,
                other.len()
            ),
        }
    }
    for (key, value, field) in [
        (
            "active_record_timestamp",
            &r.active_record_timestamp,
            &mut options.active_record_timestamp,
        ),
        (
            "boundary_timestamp",
            &r.boundary_timestamp,
            &mut options.boundary_timestamp,
        ),
        (
            "row_version_column_name",
            &r.row_version_column_name,
            &mut options.row_version_column_name,
        ),
    ] {
        if let Some(value) = value {
            seen(key, config.at(value));
            *field = Some(value.get_ref().clone());
        }
    }
    if strategy != Some(MergeStrategy::Scd2) {
        if let Some((key, at)) = first_key {
            bail!(
                "{at}: resource {}: {key} is an option of merge_strategy = \"scd2\" (with write_disposition = \"merge\")",
                r.name
            );
        }
        return Ok(None);
    }
    if let Err(e) = options.validate(&r.name) {
        bail!("{}: {e}", config.path.display());
    }
    Ok(Some(options))
}

fn build_hints(config: &LoadedConfig, r: &ResourceConfig) -> Result<Hints> {
    let mut hints = Hints::default();
    if let Some(wd) = &r.write_disposition {
        hints.write_disposition = WriteDisposition::parse(choice(
            config,
            "write_disposition",
            wd,
            &["append", "replace", "merge"],
        )?);
    }
    if let Some(ms) = &r.merge_strategy {
        hints.merge_strategy = MergeStrategy::parse(choice(
            config,
            "merge_strategy",
            ms,
            &["delete-insert", "upsert", "insert-only", "scd2"],
        )?);
    }
    if let Some(rs) = &r.replace_strategy {
        hints.replace_strategy = Some(replace_strategy(config, rs)?);
    }
    hints.scd2 = scd2_options(config, r, hints.merge_strategy)?;
    hints.primary_key = r.primary_key.clone().map(|k| k.into_vec());
    hints.merge_key = r.merge_key.clone().map(|k| k.into_vec());
    hints.table_name = r.table_name.as_deref().map(TableName::parse);
    hints.max_table_nesting = r.max_table_nesting;
    for (name, c) in &r.columns {
        let data_type = match &c.data_type {
            Some(t) => Some(
                DataType::parse(choice(
                    config,
                    "data_type",
                    t,
                    &[
                        "bigint",
                        "double",
                        "bool",
                        "text",
                        "timestamp",
                        "date",
                        "time",
                        "decimal",
                        "json",
                        "binary",
                    ],
                )?)
                .ok_or_else(|| anyhow!("{}: unknown data_type", config.at(t)))?,
            ),
            None => None,
        };
        let dedup_sort = match &c.dedup_sort {
            Some(s) => Some(match choice(config, "dedup_sort", s, &["asc", "desc"])? {
                "asc" => SortOrder::Asc,
                _ => SortOrder::Desc,
            }),
            None => None,
        };
        if c.hard_delete && hints.write_disposition != Some(WriteDisposition::Merge) {
            bail!(
                "{}: resource {}: column {name}: hard_delete needs write_disposition = \"merge\"",
                config.path.display(),
                r.name
            );
        }
        hints.columns.insert(
            name.clone(),
            ColumnHint {
                data_type,
                nullable: c.nullable,
                precision: c.precision,
                scale: c.scale,
                timezone: c.timezone,
                hard_delete: c.hard_delete,
                dedup_sort,
            },
        );
    }
    Ok(hints)
}
