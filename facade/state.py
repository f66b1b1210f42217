"""Facade application state: the engine client, stored on the app through web.AppKey."""

from aiohttp import web

from clients.gateway import GatewayClient

ENGINE = web.AppKey("engine", GatewayClient)
