"""A real JupyterHub with deskgate as its proxy (`configurable-http-proxy` on PATH is deskgate).

usage: real_hub.py WORKDIR --hub-port N --proxy-port N --api-port N

Steps, each through deskgate's public port on 127.0.0.1:
1. the hub starts deskgate itself and registers its routes;
2. a user logs in with the dummy authenticator (login form, _xsrf, session cookie);
3. the user's server (jupyterhub-singleuser, a local process) is spawned;
4. the server answers HTTP, and its WebSocket (/api/events/subscribe) carries an event
   caused by saving a file;
5. deskgate is killed; the hub notices, starts it again and restores the routes.
Prints one line per step; exits non-zero on the first failure.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import yarl

TOKEN = "real-hub-test-service-token"

CONFIG = """
c.JupyterHub.ip = '127.0.0.1'
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = '127.0.0.1'
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{api_port}'
c.ConfigurableHTTPProxy.check_running_interval = 1
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = 'simple'
c.Spawner.cmd = ['jupyterhub-singleuser']
c.Spawner.args = ['--ServerApp.allow_root=True']
c.Spawner.notebook_dir = {workdir!r}
c.Spawner.start_timeout = 60
c.JupyterHub.db_url = 'sqlite:///{workdir}/jupyterhub.sqlite'
c.JupyterHub.cookie_secret_file = '{workdir}/cookie_secret'
c.JupyterHub.services = [{{'name': 'tester', 'api_token': {token!r}}}]
c.JupyterHub.load_roles = [{{
    'name': 'tester',
    'scopes': ['admin:users', 'admin:servers', 'access:servers', 'read:users'],
    'services': ['tester'],
}}]
"""


def step(msg):
    print(msg, flush=True)


async def until(what, check, limit=60):
    """Polls `check` (an async callable returning a truthy value) for up to `limit` seconds."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            last = e
        await asyncio.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what} (last error: {last})")


async def main(args):
    base = f"http://127.0.0.1:{args.proxy_port}"
    auth = {"Authorization": f"token {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=20)
    # unsafe=True: keep cookies from an IP-address host (127.0.0.1).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as http:

        async def status(path, **kw):
            async with http.get(base + path, allow_redirects=False, **kw) as r:
                return r.status

        await until("the hub behind deskgate", lambda: _ok(status("/hub/api")))
        step("1. hub up behind deskgate")

        async with http.get(base + "/hub/login") as r:
            assert r.status == 200, r.status
        xsrf = http.cookie_jar.filter_cookies(yarl.URL(base + "/hub/login")).get("_xsrf")
        assert xsrf is not None, "no _xsrf cookie from the login page"
        form = {"username": "alice", "password": "any", "_xsrf": xsrf.value}
        async with http.post(base + "/hub/login", data=form, allow_redirects=False) as r:
            assert r.status == 302, f"login answered {r.status}: {await r.text()}"
        assert await status("/hub/home") == 200, "not logged in"
        step("2. logged in as alice")

        async with http.post(base + "/hub/api/users/alice/server", headers=auth) as r:
            assert r.status in (201, 202), f"spawn answered {r.status}: {await r.text()}"

        async def ready():
            async with http.get(base + "/hub/api/users/alice", headers=auth) as r:
                user = await r.json()
                return user.get("servers", {}).get("", {}).get("ready")

        await until("alice's server", ready)
        step("3. alice's server spawned")

        async with http.get(base + "/user/alice/api/status", headers=auth) as r:
            assert r.status == 200, f"/user/alice/api/status: {r.status}"
            await r.json()
        async with http.ws_connect(
            base + "/user/alice/api/events/subscribe", headers=auth
        ) as ws:
            body = {"type": "file", "format": "text", "content": "hello through deskgate"}
            async with http.put(
                base + "/user/alice/api/contents/hello.txt", json=body, headers=auth
            ) as r:
                assert r.status in (200, 201), f"save answered {r.status}"
            msg = await asyncio.wait_for(ws.receive(), 20)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            assert "hello.txt" in msg.data, msg.data
        step("4. server reached by HTTP and by WebSocket")

        pid = int(open(os.path.join(args.workdir, "jupyterhub-proxy.pid")).read())
        os.kill(pid, signal.SIGKILL)

        async def restored():
            return await status("/user/alice/api/status", headers=auth) == 200

        await until("the hub to restart deskgate and restore routes", restored)
        new_pid = int(open(os.path.join(args.workdir, "jupyterhub-proxy.pid")).read())
        assert new_pid != pid, "the proxy was not restarted"
        step("5. proxy killed; hub restarted it, routes restored")


async def _ok(status_coro):
    return await status_coro == 200


def run():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--hub-port", type=int, required=True)
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--api-port", type=int, required=True)
    args = p.parse_args()
    config = os.path.join(args.workdir, "jupyterhub_config.py")
    with open(config, "w") as f:
        f.write(CONFIG.format(token=TOKEN, **vars(args)))
    log = open(os.path.join(args.workdir, "jupyterhub.log"), "w")
    hub = subprocess.Popen(
        ["jupyterhub", "-f", config], cwd=args.workdir, stdout=log, stderr=log
    )
    try:
        asyncio.run(main(args))
    except BaseException:
        log.flush()
        sys.stdout.write(open(log.name).read()[-6000:])
        raise
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()
        # With a 1 s check_running_interval the hub may start its proxy once more while it
        # shuts down (JupyterHub's race, CHP's too): stop that one as well.
        try:
            os.kill(int(open(os.path.join(args.workdir, "jupyterhub-proxy.pid")).read()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    print("routes restored; hub stopped", flush=True)


if __name__ == "__main__":
    run()
