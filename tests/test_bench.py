"""`bench/run.py` runs end to end and writes its report in the documented shape.

Only the harness is held here: every number is machine-dependent, so none is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from numbers import Real
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LATENCY = {"p50_ms", "p90_ms", "p99_ms", "max_ms"}


def _numbers(mapping: dict[str, Any], keys: set[str]) -> None:
    assert keys <= mapping.keys(), keys - mapping.keys()
    for key in keys:
        assert isinstance(mapping[key], Real), (key, mapping[key])


def _send_phase(phase: dict[str, Any], cpu_group: str) -> None:
    _numbers(phase, {"sent", "ok", "rps", "wall_s", "client_cpu_us_per_req", "client_cores"})
    _numbers(phase["latency"], LATENCY)
    assert phase["ok"] > 0, phase["statuses"]
    _numbers(phase["cpu"][cpu_group], {"cpu_s", "cores", "us_per_msg"})


def test_quick_run_reports_every_measure_and_gets_every_custom_data_back(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--seconds", "2",
         "--workers", "1", "--db", "sqlite", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Targets" in done.stdout and "every custom_data back" in done.stdout

    result = json.loads(out.read_text())
    assert {"started", "machine", "params", "notes", "vendor_alone", "baseline", "runs",
            "targets", "all_custom_data_back"} <= result.keys()
    assert result["params"]["workers"] == [1] and result["params"]["db"] == ["sqlite"]
    assert any("CONNECTOR_LOG_LEVEL" in note for note in result["notes"])
    _numbers(result["vendor_alone"]["200"]["latency"], LATENCY)
    _send_phase(result["baseline"]["1"]["send"], "server")

    [run] = result["runs"]
    assert (run["name"], run["status"]) == ("sqlite w1", "ok")
    _send_phase(run["send"], "connector")
    _send_phase(run["rates"]["200"], "connector")
    _numbers(run, {"ratio_to_baseline"})
    assert run["processes"], "the connector's processes are listed"
    for phase in (run["e2e"], run["soak"]):
        _numbers(phase, {"rate_msg_s", "span_s"})
        _numbers(phase["cpu"]["connector"], {"cpu_s", "us_per_msg"})
        check = phase["check"]
        assert check["accepted"] > 0
        assert check["delivered"] == check["accepted"] and check["missing"] == 0, check
        assert check["custom_data_mismatches"] == 0, check["mismatch_examples"]
        assert check["auth_failures"] == 0 and check["jwt_checked"] > 0
        assert phase["custom_data_ok"] is True
    assert run["soak"]["sent"] == result["params"]["long"] == 1000
    _numbers(run["soak"]["rss"], {"start_kb", "end_kb", "peak_kb", "peak_hwm_kb", "growth_pct"})
    assert run["custom_data_ok"] is True and result["all_custom_data_back"] is True

    # every message costs store statements (a claim, an outcome, two callbacks, the report)
    assert run["e2e"]["statements_per_msg"] >= 4, run["e2e"]["statements_per_msg"]
    assert result["kannel"]["status"] == "skipped"  # only with --kannel
    assert {t["target"].split(" ")[0] for t in result["targets"]} == {"send", "p99", "RSS"}
    for target in result["targets"]:
        assert {"run", "target", "measured", "unit", "met"} <= target.keys()


def test_throttle_bench_measures_every_backend_and_only_shared_ones_keep_the_limit(
        tmp_path: Path) -> None:
    out = tmp_path / "throttle.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throttle.py"), "--runs", "1", "--seconds", "0.5",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "| buckets | acquires/s |" in done.stdout
    median = json.loads(out.read_text())["median"]
    assert set(median) == {"in-process", "postgresql", "postgresql, logged table",
                           "redis (hiredis parser)", "redis (python parser)"}
    for name, figures in median.items():
        _numbers(figures, {"acquires_per_s", "client_cpu_us", "server_cpu_us", "accuracy"})
        _numbers(figures, LATENCY)
        # Counts, not timings: what was admitted against one bucket plus rate x window.
        if name == "in-process":
            assert figures["overshoot"] > 0  # two processes, two budgets
        else:
            assert figures["overshoot"] <= 1e-6, (name, figures)


def test_kannel_peer_figures_are_the_medians_of_its_repetitions(tmp_path: Path) -> None:
    """bench/kannel.py reads the peer script's per-repetition lines back from its work dir."""
    work = tmp_path / "work"
    work.mkdir()
    reps = [{"accept_rps": a, "dlr_e2e_rps": d, "fwd_e2e_rps": f, "cpu_kannel_us_per_msg": c}
            for a, d, f, c in ((6000, 3000, 1600, 700), (7000, 4000, 1900, 650),
                               (6500, 3600, 1800, 800))]
    (work / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reps))
    script = tmp_path / "peer.sh"
    script.write_text(f'echo "work dir: {work}"\necho "DURATION=$DURATION REPS=$REPS"\n')
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import kannel

        peer = kannel.measure(2, 3, 8, script=script)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert peer["status"] == "ok"
    assert (peer["accept_rps"], peer["e2e_msg_s"], peer["vendor_msg_s"],
            peer["cpu_us_per_msg"]) == (6500, 1800, 1800, 700)
    assert not work.exists(), "the peer's work dir is removed after reading"
    failed = tmp_path / "broken.sh"
    failed.write_text("echo 'Kannel did not come up'; exit 1\n")
    assert kannel.measure(2, 1, 8, script=failed)["status"] == "failed"
