"""The control plane: the job system the API and the workers share (settings, the database and
its repositories, the queue, storage and the job lifecycle). Imports no FastAPI and no torch."""
