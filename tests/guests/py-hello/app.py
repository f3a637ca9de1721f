"""fleetcast test guest: a wasi:http/proxy component written in Python.

Every request, any method and path: status 200, header
`x-hello-version: py-1.0.0`, body `hello from python\n`.

Built with componentize-py (see build.sh); `wit_world` is the bindings module
componentize-py generates for the target world (wasi:http/proxy@0.2.12).
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

VERSION = "py-1.0.0"
BODY = b"hello from python\n"


class IncomingHandler(exports.IncomingHandler):
    """The exported wasi:http/incoming-handler."""

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        headers = Fields.from_list(
            [
                ("x-hello-version", VERSION.encode()),
                ("content-type", b"text/plain"),
                ("content-length", str(len(BODY)).encode()),
            ]
        )
        response = OutgoingResponse(headers)
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The output stream is a child of the body: drop it (end of `with`)
        # before finishing the body.
        with body.write() as stream:
            stream.blocking_write_and_flush(BODY)
        OutgoingBody.finish(body, None)
