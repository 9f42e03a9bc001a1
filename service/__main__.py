"""``python -m service`` (``make serve``): check the settings, then serve on SLEEVE_SERVICE_HOST:PORT."""

from __future__ import annotations

import sys

from service.preflight import check
from sleeve.settings import SettingsError


def main() -> int:
    try:
        settings = check()  # before the heavy imports: a bad setting fails within the first second
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from service.app import create_app

    settings.ensure_dirs()
    print(f"Sleeve covers on http://{settings.service_host}:{settings.service_port}", flush=True)
    uvicorn.run(create_app(settings), host=settings.service_host, port=settings.service_port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
