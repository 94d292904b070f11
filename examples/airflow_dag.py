"""Airflow DAGs running `highwater run` as plain tasks (no Python package of ours needed).

- `github_events_daily`: the normal incremental run once a day; the cursor and the boundary dedup
  live in the pipeline's state, committed with the data, so a retried or late task loads nothing
  twice. Runs of this DAG must not overlap (max_active_runs=1): highwater refuses a second
  state-writing run of the same pipeline anyway.
- `github_events_backfill`: a weekly backfill split into seven daily tasks that run in parallel.
  Each task passes its data interval with --interval-start/--interval-end; resources with
  `allow_external_schedulers = true` then load exactly [start, end) of their cursor as a stateless
  backfill (no pipeline lock, no state written), so adjacent intervals load every row exactly once
  even when the tasks run at the same time. Exit status 1 fails the task; its retry is safe.

Set HIGHWATER_BIN and HIGHWATER_PROJECT for your machine.
"""
import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

HIGHWATER = os.environ.get("HIGHWATER_BIN", "highwater")
PROJECT = os.environ.get("HIGHWATER_PROJECT", "/opt/highwater")

with DAG(
    dag_id="github_events_daily",
    start_date=datetime(2024, 1, 1),
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
) as daily:
    BashOperator(
        task_id="load_events",
        bash_command=f"cd {PROJECT} && {HIGHWATER} run examples/github_events/pipeline.toml --progress log",
    )

with DAG(
    dag_id="github_events_backfill",
    start_date=datetime(2024, 1, 1),
    schedule="@weekly",
    catchup=True,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
) as backfill:
    for day in range(7):
        # One day of the week's interval per task, all in parallel.
        start = f"{{{{ (data_interval_start + macros.timedelta(days={day})).isoformat() }}}}"
        end = f"{{{{ (data_interval_start + macros.timedelta(days={day + 1})).isoformat() }}}}"
        BashOperator(
            task_id=f"backfill_day_{day}",
            bash_command=(
                f"cd {PROJECT} && {HIGHWATER} run examples/schedulers/backfill.toml --progress log "
                f"--interval-start '{start}' --interval-end '{end}'"
            ),
        )
