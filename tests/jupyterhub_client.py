"""Drives deskgate's admin API with JupyterHub's own proxy client (a real client nobody here wrote).

usage: jupyterhub_client.py API_URL TOKEN add ROUTESPEC TARGET [JSON_DATA]
       jupyterhub_client.py API_URL TOKEN get_all
       jupyterhub_client.py API_URL TOKEN delete ROUTESPEC
Prints JSON results on stdout.
"""
import asyncio
import json
import sys

from jupyterhub.proxy import ConfigurableHTTPProxy


async def main(api_url, token, command, *args):
    proxy = ConfigurableHTTPProxy(api_url=api_url, auth_token=token, should_start=False)
    if command == "add":
        routespec, target = args[0], args[1]
        data = json.loads(args[2]) if len(args) > 2 else {}
        await proxy.add_route(routespec, target, data)
        print(json.dumps({"added": routespec}))
    elif command == "get_all":
        print(json.dumps(await proxy.get_all_routes()))
    elif command == "delete":
        await proxy.delete_route(args[0])
        print(json.dumps({"deleted": args[0]}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
