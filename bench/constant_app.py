"""The baseline: a FastAPI endpoint that returns a constant document, served like the API
(same uvicorn options, same FastAPI settings: its built-in telemetry hooks off, as in ours)."""

from fastapi import FastAPI, Response

from cdc_worker.api.app import NO_TELEMETRY

DOCUMENT = b'{"id":1,"title":"constant"}'
app = FastAPI(telemetry=NO_TELEMETRY)


@app.get("/tickets/{ticket_id}")
async def constant(ticket_id: int) -> Response:
    return Response(DOCUMENT, media_type="application/json")
