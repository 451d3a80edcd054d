"""Boot settings: one table (settings.py) from which the reader and the docs are derived; defaults, validation
with one clear sentence per bad variable (all at once), misspelt names, provider lists, IoT Edge detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_inference.errors import SettingsError
from edge_inference.settings import (
    DEFAULT_MODEL_PATH,
    ENV_VARS,
    OUTPUT_FOLDERS,
    Settings,
    iot_edge_environment,
    read_settings,
    unknown_variable_warnings,
)
from tests.iot_fakes import IOT_EDGE_ENV
from tools import settings_doc

pytestmark = pytest.mark.timeout(10)


def test_defaults_match_design() -> None:
    s = read_settings({})
    assert s.model_path == DEFAULT_MODEL_PATH
    assert (s.input_dir, s.output_dir, s.state_dir) == (Path("/app/input"), Path("/app/output"), Path("/app/state"))
    assert (s.confidence_threshold, s.iou_threshold, s.max_detections) == (0.5, 0.45, 300)
    assert s.execution_providers == ("auto",)
    assert (s.require_gpu, s.watch_mode, s.input_disposition) == (False, "auto", "archive")
    assert (s.http_port, s.metrics_port) == (5000, 9600)


def test_every_setting_field_is_documented() -> None:
    documented = {v.name for v in ENV_VARS}
    fields = {name.upper() for name in Settings.__dataclass_fields__}
    assert fields == documented


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CONFIDENCE_THRESHOLD", "1.7", "from 0 to 1"),
        ("CONFIDENCE_THRESHOLD", "high", "a number"),
        ("CONFIDENCE_THRESHOLD", "nan", "a number"),
        ("MAX_DETECTIONS", "0", "an integer from 1 to 1000"),
        ("MAX_DETECTIONS", "2.5", "an integer"),
        ("REQUIRE_GPU", "maybe", "true or false"),
        ("WATCH_MODE", "inotify", "one of auto, events, poll"),
        ("INPUT_DISPOSITION", "move", "one of archive, delete, keep"),
        ("EXECUTION_PROVIDERS", "cuda,rocm", "tensorrt, cuda, cpu"),
        ("HTTP_PORT", "70000", "from 0 to 65535"),
        ("REPLICA_ID", "../x", "letters, digits"),
        ("OUTPUT_RETENTION_DAYS", "-1", "a number of days from 0 to 36500"),
        ("OUTPUT_RETENTION_DAYS", "logs:7", "folders results, annotated, failed, processed, review, telemetry"),
        ("OUTPUT_RETENTION_DAYS", "processed:7,processed:9", "folder:number pairs"),
        ("OUTPUT_MAX_GB", "processed:lots", "a number of GB"),
        ("REQUIRE_MOUNTED_SHARES", "yes please", "true or false"),
        ("PROGRESS_INTERVAL_SECONDS", "0", "from 1 to 86400"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        read_settings({name: value})
    assert name in str(err.value) and repr(value) in str(err.value) and fragment in str(err.value)


def test_output_limits_are_one_number_or_one_per_folder() -> None:
    s = read_settings({"OUTPUT_RETENTION_DAYS": "processed:7, annotated:7,*:90", "OUTPUT_MAX_GB": "500"})
    days, gb = s.output_retention_days, s.output_max_gb
    assert (days.of("processed"), days.of("annotated"), days.of("results"), days.of("telemetry")) == (7, 7, 90, 90)
    assert all(gb.of(folder) == 500 for folder in OUTPUT_FOLDERS)
    assert str(days) == "processed:7,annotated:7,*:90" and str(gb) == "500"
    off = read_settings({})
    assert not off.output_retention_days.active and not off.output_max_gb.active and not off.require_mounted_shares
    only = read_settings({"OUTPUT_MAX_GB": "review:100"}).output_max_gb
    assert only.active and only.of("review") == 100 and only.of("results") == 0


def test_same_port_for_http_and_metrics_is_refused() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        read_settings({"HTTP_PORT": "9600"})


def test_provider_aliases_in_order_without_duplicates() -> None:
    s = read_settings({"EXECUTION_PROVIDERS": "TensorRT, cuda,cpu,cuda"})
    assert s.execution_providers == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def test_blank_values_mean_default_and_booleans_are_flexible() -> None:
    s = read_settings({"CONFIDENCE_THRESHOLD": "  ", "REQUIRE_GPU": "YES", "TENSORRT_FP16": "0"})
    assert s.confidence_threshold == 0.5 and s.require_gpu is True and s.tensorrt_fp16 is False


def test_iot_edge_environment_needs_all_seven_variables_or_the_connection_string() -> None:
    seven = IOT_EDGE_ENV
    assert iot_edge_environment(seven)
    assert not iot_edge_environment({k: v for k, v in seven.items() if k != "IOTEDGE_MODULEID"})
    assert iot_edge_environment({"EdgeHubConnectionString": "x", "EdgeModuleCACertificateFile": "/ca.pem"})
    assert not iot_edge_environment({})


def test_secret_looking_names_are_redacted_in_errors() -> None:
    from edge_inference.settings.reader import _Reader

    err = _Reader({"SAS_TOKEN": "abc"})._fail("SAS_TOKEN", "supersecret", "x")
    assert "supersecret" not in str(err)


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [v.name for v in ENV_VARS if f"`{v.name}`" not in readme]
    assert not missing, f"README.md does not document {missing}"


def test_batch_size_auto_is_one_on_the_cpu_and_eight_on_a_gpu() -> None:
    auto = read_settings({})
    assert auto.effective_batch_size(on_gpu=False) == 1 and auto.effective_batch_size(on_gpu=True) == 8
    assert read_settings({"BATCH_SIZE": "4"}).effective_batch_size(on_gpu=False) == 4


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        read_settings(
            {"CONFIDENCE_THRESHOLD": "high", "QUEUE_SIZE": "0", "WATCH_MODE": "inotify", "IOU_THRESHOLD": "0.3"}
        )
    assert err.value.problems == [
        "CONFIDENCE_THRESHOLD='high' is invalid: expected a number from 0 to 1",
        "WATCH_MODE='inotify' is invalid: expected one of auto, events, poll",
        "QUEUE_SIZE='0' is invalid: expected an integer from 1 to 100000",
    ]


def test_types_ranges_and_defaults_come_from_the_one_table() -> None:
    # given the table's row for CUDA_DEVICE_ID (an int from 0 to 64) and LABELS_PATH (an optional path)
    assert read_settings({"CUDA_DEVICE_ID": "64", "LABELS_PATH": "~/labels.txt"}).cuda_device_id == 64
    assert read_settings({"LABELS_PATH": "/x/labels.txt"}).labels_path == Path("/x/labels.txt")
    with pytest.raises(SettingsError, match="CUDA_DEVICE_ID='65' is invalid: expected an integer from 0 to 64"):
        read_settings({"CUDA_DEVICE_ID": "65"})
    # and the documented defaults are the dataclass's own
    documented = {v.name: v.default for v in ENV_VARS}
    assert documented["QUEUE_SIZE"] == str(Settings().queue_size) and documented["AGNOSTIC_NMS"] == "false"
    assert documented["MODEL_PATH"] == "bundled demo model" and documented["LABELS_PATH"] == ""


def test_a_misspelt_variable_is_named_in_a_warning_and_others_are_left_alone() -> None:
    env = {
        "CONFIDENCE_TRESHOLD": "0.9",
        "batch_size": "4",
        "CONFIDENCE_THRESHOLD": "0.5",
        "HTTP_PROXY": "http://proxy:3128",
        "PATH": "/usr/bin",
        "IOTEDGE_MODULEID": "edge-inference",
    }
    assert unknown_variable_warnings(env) == [
        "CONFIDENCE_TRESHOLD is not a setting of this module and is ignored: did you mean CONFIDENCE_THRESHOLD?",
        "batch_size is not a setting of this module and is ignored: did you mean BATCH_SIZE?",
    ]


def test_readme_table_and_env_example_are_generated_from_the_table_and_current() -> None:
    assert settings_doc.main(["--check"]) == 0, "run: python tools/settings_doc.py (make settings-doc)"
    readme = settings_doc.README.read_text()
    assert settings_doc.render_table() in readme
