"""A stock Open Inference Protocol client (tritonclient) against a shardnet server.

Run as its own process: tritonclient registers the same protobuf names (`inference.*`) as
shardnet's stubs, so the two cannot share one process's descriptor pool.

    python tests/stock_client.py HOST:PORT INPUT.npy OUTPUT.npz [CA.pem]

With CA.pem (a worker's self-signed certificate) the client speaks TLS and trusts it.
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main(address: str, input_path: str, output_path: str, ca: str | None = None) -> None:
    if ca:
        client = grpcclient.InferenceServerClient(url=address, ssl=True, root_certificates=ca)
    else:
        client = grpcclient.InferenceServerClient(url=address)
    assert client.is_server_live(), "server not live"
    metadata = client.get_model_metadata("mlp", as_json=True)
    (tensor,) = metadata["inputs"]
    outputs = [o["name"] for o in metadata["outputs"]]
    x = np.load(input_path)
    infer_input = grpcclient.InferInput(tensor["name"], list(x.shape), tensor["datatype"])
    infer_input.set_data_from_numpy(x)
    result = client.infer(
        "mlp", [infer_input], outputs=[grpcclient.InferRequestedOutput(n) for n in outputs]
    )
    np.savez(output_path, **{n: result.as_numpy(n) for n in outputs})
    print(f"ok {metadata['name']} versions={metadata['versions']}")


if __name__ == "__main__":
    main(*sys.argv[1:])
