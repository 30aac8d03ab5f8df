"""A local GCS server for tests: gcp-storage-emulator, plus the generation headers of the real
service that tensorstore relies on.

tensorstore (orbax's array store) reads an object's generation from the `x-goog-generation`
header of every media download, as GCS sends it, to keep its OCDBT manifest consistent; the
emulator sends the generation only in the JSON metadata. This script adds the header and then
runs the emulator unchanged.

  python tests/gcs_emulator.py PORT BUCKET     # serves http://127.0.0.1:PORT until killed
"""

import sys

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    try:
        found = storage.get_file_obj(request.params["bucket_name"],
                                     request.params["object_id"])
        response["x-goog-generation"] = str(found["generation"])
        response["x-goog-metageneration"] = str(found["metageneration"])
    except NotFound:
        pass  # the download below answers 404
    return _download(request, response, storage, *args, **kwargs)


# The router's tables hold the handler functions: replace before the server module loads.
objects.download = _download_with_generation

from gcp_storage_emulator.server import create_server  # noqa: E402


def main() -> None:
    port, bucket = int(sys.argv[1]), sys.argv[2]
    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main()
