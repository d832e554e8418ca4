# Documents and chunks live in each workspace's own schema; the platform admin runs on the public site, where those
# tables don't exist. They are managed from the workspace dashboard (/knowledge/), the API and `manage.py ingest`,
# `reindex` and `failed_jobs` instead, so nothing is registered here.
