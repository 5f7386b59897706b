"""broken_env: a server whose environment was half built (a dependency never got installed).

It must fail start-up loudly, naming the missing module, instead of letting the fleet report "ready".
"""

import gymfleet_fault_suite_missing_dependency  # noqa: F401 - the point: this module is not installed

from gymfleet.server import BaseResourcesServerConfig, SimpleResourcesServer


class BrokenEnv(SimpleResourcesServer):
    config: BaseResourcesServerConfig


if __name__ == "__main__":
    BrokenEnv.run_webserver()
