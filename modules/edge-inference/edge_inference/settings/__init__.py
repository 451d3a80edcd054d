"""Boot settings: the one place that reads the process environment.

    table.py    the settings table: each variable written once (name, type, default, range, meaning) as a field
                of the frozen `Settings`
    reader.py   reading and validating the table from the environment, every bad variable reported at once;
                misspelt names warned about; `ENV_VARS`, the table as the docs show it
    edge.py     the IoT Edge runtime's own variables (is the module inside IoT Edge, and its identity for logs)

The names below are the package's interface; `from edge_inference.settings import Settings, read_settings`.
"""

from edge_inference.settings.edge import EDGEHUB_VARIABLES, IOTEDGE_VARIABLES, edge_identity, iot_edge_environment
from edge_inference.settings.reader import (
    ENV_VARS,
    SETTING_NAMES,
    EnvVar,
    read_settings,
    unknown_variable_warnings,
)
from edge_inference.settings.table import (
    DEFAULT_MODEL_PATH,
    OUTPUT_FOLDERS,
    PACKAGE_DIR,
    Disposition,
    PerFolder,
    Settings,
    Spec,
    WatchMode,
    parse_providers,
    setting,
)

__all__ = [
    "DEFAULT_MODEL_PATH",
    "EDGEHUB_VARIABLES",
    "ENV_VARS",
    "IOTEDGE_VARIABLES",
    "OUTPUT_FOLDERS",
    "PACKAGE_DIR",
    "SETTING_NAMES",
    "Disposition",
    "EnvVar",
    "PerFolder",
    "Settings",
    "Spec",
    "WatchMode",
    "edge_identity",
    "iot_edge_environment",
    "parse_providers",
    "read_settings",
    "setting",
    "unknown_variable_warnings",
]
