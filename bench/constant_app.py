"""The baseline: a FastAPI endpoint that returns a constant document, served like the API."""

from fastapi import FastAPI, Response

DOCUMENT = b'{"id":1,"title":"constant"}'
app = FastAPI()


@app.get("/tickets/{ticket_id}")
async def constant(ticket_id: int) -> Response:
    return Response(DOCUMENT, media_type="application/json")
