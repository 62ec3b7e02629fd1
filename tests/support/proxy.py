"""A TCP forwarder on a loopback port that can be taken down and brought back: a broker (or
any server) that goes away and returns, for the reconnection tests."""

import selectors
import socket
import threading


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Proxy:
    """TCP forwarder to the broker that can be taken down and brought back."""

    def __init__(self, target):
        self.target, self.port = target, free_port()
        self.thread = None

    def start(self):
        self.listener = socket.create_server(('127.0.0.1', self.port), reuse_port=False)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)

    def _run(self):
        sel, peer = selectors.DefaultSelector(), {}
        sel.register(self.listener, selectors.EVENT_READ)
        while not self.stopping:
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                if sock is self.listener:
                    a, _ = sock.accept()
                    b = socket.create_connection(self.target)
                    peer[a], peer[b] = b, a
                    sel.register(a, selectors.EVENT_READ)
                    sel.register(b, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b''
                if data:
                    peer[sock].sendall(data)
                    continue
                for s in (sock, peer.pop(sock)):
                    peer.pop(s, None)
                    sel.unregister(s)
                    s.close()
        for s in [self.listener, *peer]:
            s.close()
        sel.close()
