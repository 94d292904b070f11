//! highwater: incremental data loading in Rust, with dlt's semantics.
//!
//! A [`Pipeline`] runs [`Resource`]s (grouped in a [`Source`]) through three stages, each leaving
//! its output on disk in a load package so that a run killed at any point is finished by the next:
//!
//! 1. **extract** — pull items, apply the [`Incremental`] filter and boundary dedup, dispatch items
//!    to tables, record the pending state;
//! 2. **normalize** — nested JSON → parent and child tables, named and typed as dlt names and
//!    types them, written as Parquet;
//! 3. **load** — one destination transaction per package: DDL, data, write disposition, state row
//!    and `_dlt_loads` row; only then is the local state advanced.
//!
//! ```no_run
//! use highwater::{Pipeline, Resource, WriteDisposition};
//! use serde_json::json;
//!
//! let pipeline = Pipeline::builder("shop").dataset("shop_data").build()?;
//! let orders = Resource::from_items("orders", vec![json!({"id": 1, "items": [{"sku": "a"}]})])
//!     .write_disposition(WriteDisposition::Merge)
//!     .primary_key(["id"]);
//! let info = pipeline.run(orders)?;
//! println!("loaded {:?}", info.tables);
//! # Ok::<(), highwater::Error>(())
//! ```

#![warn(missing_docs)]

pub use arrow;

mod crash;
pub mod destination;
mod disk;
mod error;
mod extract;
pub mod hash;
pub mod incremental;
pub mod integrity;
pub mod json;
mod lock;
pub mod naming;
pub mod normalize;
pub mod package;
mod pipeline;
mod progress;
mod resource;
pub mod schema;
pub mod state;
mod timeparse;
pub mod typed_json;

#[doc(hidden)]
pub use crash::observe_points;
pub use destination::DestinationConfig;
pub use error::{Error, Result};
pub use incremental::{
    Bound, Incremental, IncrementalView, Interval, LastValueFunc, OnCursorMissing, RowOrder,
};
pub use pipeline::{
    LoadInfo, Pipeline, PipelineBuilder, Refresh, RunOptions, DEFAULT_KEEP_LOADED_PACKAGES,
};
pub use progress::ProgressEvent;
pub use resource::{
    ColumnHint, Hints, Item, ItemIter, Resource, ResourceContext, Scd2Options, Source, TableName,
};
pub use schema::{DataType, MergeStrategy, ReplaceStrategy, SortOrder, WriteDisposition};
