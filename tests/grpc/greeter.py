"""A real gRPC server and client (grpcio) for the gateway's gRPC tests.

    greeter.py server PORT             serve helloworld.Greeter on 127.0.0.1:PORT (h2c)
    greeter.py client TARGET SCENARIO  run one scenario through TARGET, print key=value lines

Messages are raw bytes (grpcio's generic handlers, no protobuf), so nothing is generated: the
calls, their HTTP/2 framing, metadata, trailers and status codes are gRPC's all the same.

Methods of helloworld.Greeter: SayHello (unary: "hello <request> from <port>"), Countdown
(server streaming: three messages), Collect (client streaming: the messages joined), Chat
(bidirectional: each message echoed), Unavailable (fails with UNAVAILABLE), Slow (answers after
two seconds). Every answer carries the trailing metadata x-served-by: <port>.
"""

import sys
import time
from concurrent import futures

import grpc

SERVICE = "helloworld.Greeter"


def serve(port):
    served_by = (("x-served-by", str(port)),)

    def say_hello(request, context):
        context.set_trailing_metadata(served_by)
        client = dict(context.invocation_metadata()).get("x-client", "")
        context.send_initial_metadata((("x-client-seen", client),))
        return b"hello " + request + b" from " + str(port).encode()

    def countdown(request, context):
        context.set_trailing_metadata(served_by)
        for n in (b"3", b"2", b"1"):
            yield n + b" " + request

    def collect(requests, context):
        context.set_trailing_metadata(served_by)
        return b",".join(requests)

    def chat(requests, context):
        context.set_trailing_metadata(served_by)
        for message in requests:
            yield b"echo " + message

    def unavailable(request, context):
        context.set_trailing_metadata(served_by)
        context.abort(grpc.StatusCode.UNAVAILABLE, "this replica cannot serve")

    def slow(request, context):
        time.sleep(2)
        return request

    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "Countdown": grpc.unary_stream_rpc_method_handler(countdown),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"greeter listening on {port}", flush=True)
    server.wait_for_termination()


def trailer(call, key):
    return dict(call.trailing_metadata() or ()).get(key, "")


def client(target, scenario):
    channel = grpc.insecure_channel(target)
    method = lambda name: f"/{SERVICE}/{name}"
    try:
        if scenario == "unary":
            reply, call = channel.unary_unary(method("SayHello")).with_call(
                b"world", metadata=(("x-client", "tests"),), timeout=10)
            print("status=OK")
            print(f"reply={reply.decode()}")
            print(f"served_by={trailer(call, 'x-served-by')}")
            print(f"client_seen={dict(call.initial_metadata()).get('x-client-seen', '')}")
        elif scenario == "server_streaming":
            call = channel.unary_stream(method("Countdown"))(b"go", timeout=10)
            replies = [m.decode() for m in call]
            print("status=OK")
            print(f"replies={'|'.join(replies)}")
            print(f"served_by={trailer(call, 'x-served-by')}")
        elif scenario == "client_streaming":
            reply, call = channel.stream_unary(method("Collect")).with_call(
                iter([b"a", b"b", b"c"]), timeout=10)
            print("status=OK")
            print(f"reply={reply.decode()}")
        elif scenario == "bidi":
            call = channel.stream_stream(method("Chat"))(iter([b"one", b"two"]), timeout=10)
            replies = [m.decode() for m in call]
            print("status=OK")
            print(f"replies={'|'.join(replies)}")
        elif scenario in ("unavailable", "slow", "unary_once"):
            name = {"unavailable": "Unavailable", "slow": "Slow", "unary_once": "SayHello"}[scenario]
            reply = channel.unary_unary(method(name))(b"x", timeout=10)
            print("status=OK")
            print(f"reply={reply.decode()}")
        elif scenario == "mock_echo":
            # The mock backend's own gRPC service (mock-backend --h2).
            reply = channel.unary_unary("/mock.Echo/Unary")(b"ping", timeout=10)
            replies = [m.decode() for m in channel.unary_stream("/mock.Echo/Stream")(b"tick", timeout=10)]
            print("status=OK")
            print(f"reply={reply.decode()}")
            print(f"replies={'|'.join(replies)}")
            channel.unary_unary("/mock.Echo/Unavailable")(b"x", timeout=10)
        elif scenario == "unknown":
            channel.unary_unary("/nowhere.Service/Call")(b"x", timeout=10)
            print("status=OK")
        else:
            sys.exit(f"unknown scenario {scenario}")
    except grpc.RpcError as e:
        print(f"status={e.code().name}")
        print(f"message={e.details()}")
    finally:
        channel.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2], sys.argv[3])
