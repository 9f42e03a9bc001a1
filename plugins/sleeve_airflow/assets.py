"""The Assets that connect Sleeve's DAGs (producer -> consumer)."""

from airflow.sdk import Asset

SONGS = Asset("sleeve://warehouse/songs")  # crawl_songs -> label_songs
PROMPTS = Asset("sleeve://warehouse/prompts")  # label_songs -> batch_generate / weekly_retrain
IMAGES = Asset("sleeve://warehouse/images")  # batch_generate -> weekly_report
STYLE_MODEL = Asset("sleeve://registry/style-model")  # weekly_retrain -> batch_generate
PERSONALIZATION_REQUESTS = Asset("sleeve://warehouse/personalization_requests")  # -> personalize
