"""Runs the real, unchanged Instaloader 4.16 command line in-process against the simulator.

    python instaloader_cli.py --base URL --dir DIR [--config-home DIR] [--log-requests FILE]
                              [--media-prefix PREFIX]... [--] INSTALOADER_ARGS...

Everything after this script's own options goes to Instaloader's `main()` unchanged, as if typed
after `instaloader` on a shell, for example:

    python instaloader_cli.py --base http://127.0.0.1:8443 --dir /tmp/tree \\
        --login me --password pw --no-sleep --comments --stories --highlights qivika0 horu_mo2

(`--login`, `--password` and `--sessionfile` are Instaloader's own options; `--no-sleep`, a hidden
Instaloader option, only drops its random pauses between requests and changes no file.)

What this script changes, and nothing else:
- Requests: `to_simulator.redirect(BASE)` (simulator/tests/instaloader/to_simulator.py) rewrites
  Instagram's two hosts to the simulator, and media URLs starting with a media prefix (default
  `https://scontent.sim.instagram.test/`) are rewritten to `BASE/` (so `.../v/t51/1_n.jpg` is
  fetched from `BASE/v/t51/1_n.jpg`). Instaloader still sees the original URL everywhere, so file
  names and extensions are derived from it as they would be. URLs that already point at the
  simulator are left alone.
- The working directory is DIR (created if missing): Instaloader's default `--dirname-pattern`
  `{target}` is relative to it.
- XDG_CONFIG_HOME points at `--config-home` (default: a new temporary directory), so a session
  file from an earlier run (another simulator) is never picked up by accident, and the user's own
  ~/.config is not written. Give the same `--config-home` to two runs to reuse the session.

`--log-requests FILE` appends one JSON line per HTTP request Instaloader sent:
`{"method", "url" (as Instaloader asked for it), "sent" (after rewriting), "status", "media"}`,
`media` true for requests to a media prefix or to `/v/` on the simulator. A `--fast-update` run
over a complete tree should show media requests only for the title pictures (profile picture,
highlight covers), which Instaloader fetches on every run (see docs/instaloader-tree.md).

Exit status: Instaloader's own (0 success, 1 non-fatal errors were reported, 2 bad arguments,
3 login failure, 4 download aborted, 5 user aborted, 99 unexpected error).
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../simulator/tests/instaloader"))

import requests  # noqa: E402
import to_simulator  # noqa: E402

USAGE = ("usage: instaloader_cli.py --base URL --dir DIR [--config-home DIR] "
         "[--log-requests FILE] [--media-prefix PREFIX]... [--] INSTALOADER_ARGS...")
DEFAULT_MEDIA_PREFIXES = ["https://scontent.sim.instagram.test/"]


def parse(argv):
    """This script's own options come first; the first other argument starts Instaloader's."""
    opts = {"base": None, "dir": None, "config_home": None, "log_requests": None, "media_prefix": []}
    names = {"--base": "base", "--dir": "dir", "--config-home": "config_home",
             "--log-requests": "log_requests", "--media-prefix": "media_prefix"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        name, eq, value = arg.partition("=")
        if name not in names:
            break
        if not eq:
            if i + 1 >= len(argv):
                sys.exit(f"{name} needs a value\n{USAGE}")
            value = argv[i + 1]
            i += 1
        key = names[name]
        if key == "media_prefix":
            opts[key].append(value)
        else:
            opts[key] = value
        i += 1
    if not opts["base"] or not opts["dir"]:
        sys.exit(USAGE)
    opts["media_prefix"] = opts["media_prefix"] or DEFAULT_MEDIA_PREFIXES
    return opts, argv[i:]


def install_redirect(base, media_prefixes, log):
    """Instagram's hosts go to the simulator (to_simulator), media prefixes to BASE/."""
    base = base.rstrip("/")
    to_simulator.redirect(base)
    inner = requests.Session.request

    def to_simulator_media(self, method, url, *args, **kwargs):
        asked = url
        media = False
        if isinstance(url, str):
            for prefix in media_prefixes:
                if url.startswith(prefix):
                    url = base + "/" + url[len(prefix):]
                    media = True
                    break
            else:
                media = url.startswith(base + "/v/")
        try:
            resp = inner(self, method, url, *args, **kwargs)
        except Exception as err:
            if log is not None:
                log.write(json.dumps({"method": method, "url": asked, "sent": _sent(url, resp=None),
                                      "status": None, "error": type(err).__name__,
                                      "media": media}) + "\n")
                log.flush()
            raise
        if log is not None:
            log.write(json.dumps({"method": method, "url": asked, "sent": _sent(url, resp),
                                  "status": resp.status_code, "media": media}) + "\n")
            log.flush()
        return resp

    requests.Session.request = to_simulator_media


def _sent(url, resp):
    # The URL as sent, with the query string the session added (params=...).
    if resp is not None and resp.request is not None and resp.request.url:
        return resp.request.url
    return url


def main(argv):
    opts, instaloader_args = parse(argv)
    target = os.path.abspath(opts["dir"])
    os.makedirs(target, exist_ok=True)
    config_home = os.path.abspath(opts["config_home"]) if opts["config_home"] else \
        tempfile.mkdtemp(prefix="instaloader-config-")
    os.makedirs(config_home, exist_ok=True)
    os.environ["XDG_CONFIG_HOME"] = config_home
    log = open(opts["log_requests"], "a", encoding="utf-8") if opts["log_requests"] else None
    # The redirect must be in place before Instaloader makes its first requests.Session.
    install_redirect(opts["base"], opts["media_prefix"], log)

    import instaloader  # noqa: E402 (after the environment is set)
    import instaloader.__main__ as cli
    assert instaloader.__version__ == "4.16", instaloader.__version__

    os.chdir(target)
    sys.argv = ["instaloader"] + instaloader_args
    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        if log is not None:
            log.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
