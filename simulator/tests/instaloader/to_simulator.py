"""Points the real Instaloader at the simulator, changing nothing else: requests.Session.request
rewrites Instagram's two hosts to the simulator's base URL (www to BASE, i.instagram.com to
BASE/mobile), over plain http, so Instaloader's cookie jar sees the simulator's own scheme (which is
what shows the simulator's cookies work there). Media URLs on the simulator's reserved CDN host
(what it hands out when it listens on every address) go to BASE too; media URLs that already name
the simulator pass unchanged. Used by driver.py and by tests/parity.
"""
import requests

_request = requests.Session.request


def redirect(base):
    base = base.rstrip("/")

    def to_simulator(self, method, url, *args, **kwargs):
        if isinstance(url, str):
            if url.startswith("https://www.instagram.com/"):
                url = base + "/" + url[len("https://www.instagram.com/"):]
            elif url.startswith("https://i.instagram.com/"):
                url = base + "/mobile/" + url[len("https://i.instagram.com/"):]
            elif url.startswith("https://scontent.sim.instagram.test/"):
                url = base + "/" + url[len("https://scontent.sim.instagram.test/"):]
        return _request(self, method, url, *args, **kwargs)

    requests.Session.request = to_simulator
