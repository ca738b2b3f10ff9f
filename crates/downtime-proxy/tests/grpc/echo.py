"""A real gRPC server and client (grpcio) for the HTTP/2 data-path test.

    echo.py serve          serves /echo.Echo/Say (unary) and /echo.Echo/Count (server
                           streaming) on 127.0.0.1, prints its port, runs until stdin closes
    echo.py call HOST:PORT calls both through HOST:PORT and prints one JSON line

Messages are raw bytes (identity serializers), so no generated code is needed.
"""
import json
import sys
from concurrent import futures

import grpc


def serve():
    def say(request, context):
        return b"echo: " + request

    def count(request, context):
        for i in range(int(request)):
            yield str(i).encode()

    handler = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def call(target):
    out = {}
    with grpc.insecure_channel(target) as channel:
        say = channel.unary_unary("/echo.Echo/Say")
        count = channel.unary_stream("/echo.Echo/Count")
        try:
            out["say"] = say(b"hello", timeout=10).decode()
            out["count"] = [m.decode() for m in count(b"5", timeout=10)]
        except grpc.RpcError as e:
            out["error"] = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        call(sys.argv[2])
