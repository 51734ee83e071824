"""A nightly routebatch job as an Airflow DAG.

Submits the job to a Ray cluster with `ray job submit` (the cluster of cluster.yaml),
then reads the run's `_summary.json` to decide whether the night went well and to hand
cost and row counts to the next task. Exit codes of `routebatch run`: 0 every row
answered, 4 finished with some rows or files in error (rows out still = rows in),
3 configuration or cluster problem (nothing computed), 1 failed. See
docs/operations.md.

Adjust RAY_DASHBOARD, the config path and the output prefix to your setup.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

RAY_DASHBOARD = "http://ray-head.internal:8265"
CONFIG = "examples/hf-experts.yaml"
OUTPUT = "s3://my-bucket/answers/nightly/{{ ds }}"


def check_summary(output: str, **context) -> dict:
    """Fail the task unless every input row has an output row; pass the figures on."""
    import boto3

    bucket, _, prefix = output.removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/_summary.json")["Body"].read()
    summary = json.loads(body)
    if not summary["rows_match"]:
        raise RuntimeError(f"rows in {summary['rows_in']} != rows out {summary['rows_out']}")
    return {
        "rows": summary["rows_out"],
        "rows_with_errors": summary["rows_with_errors"],
        "total_cost_usd": summary["total_cost_usd"],
        "status": summary["status"],
    }


with DAG(
    dag_id="routebatch_nightly",
    start_date=datetime(2026, 1, 1),
    schedule="0 2 * * *",
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["routebatch"],
) as dag:
    # `--resume` makes a retry continue the same night's run instead of starting over
    # (the first attempt finds no run there and starts it); exit code 4 (some rows in
    # error) is judged by check_summary, not treated as a failed submission.
    answer = BashOperator(
        task_id="answer_questions",
        bash_command=(
            f"ray job submit --address {RAY_DASHBOARD} --working-dir /opt/routebatch -- "
            f"bash -c 'routebatch run {CONFIG} --resume {OUTPUT} --no-progress; rc=$?; "
            "[ $rc -eq 0 ] || [ $rc -eq 4 ]'"
        ),
    )
    summary = PythonOperator(task_id="check_summary", python_callable=check_summary, op_kwargs={"output": OUTPUT})
    answer >> summary
