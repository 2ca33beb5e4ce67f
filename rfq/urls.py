from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rfq import stream, views

app_name = "api"

urlpatterns = [
    path("whoami/", views.WhoAmIView.as_view(), name="whoami"),
    path("instruments/", views.InstrumentListApi.as_view(), name="instruments"),
    path("rfqs/", views.RfqListCreateApi.as_view(), name="rfqs"),
    path("rfqs/<str:rfq_id>/", views.RfqDetailApi.as_view(), name="rfq"),
    path("rfqs/<str:rfq_id>/cancel/", views.RfqCancelApi.as_view(), name="rfq-cancel"),
    path("rfqs/<str:rfq_id>/quotes/", views.RfqQuotesApi.as_view(), name="rfq-quotes"),
    path("rfqs/<str:rfq_id>/accept/", views.RfqAcceptApi.as_view(), name="rfq-accept"),
    path("quotes/cancel-all/", views.QuoteCancelAllApi.as_view(), name="quotes-cancel-all"),
    path("quotes/<str:quote_id>/", views.QuoteDetailApi.as_view(), name="quote"),
    path("quotes/<str:quote_id>/replace/", views.QuoteReplaceApi.as_view(), name="quote-replace"),
    path("quotes/<str:quote_id>/cancel/", views.QuoteCancelApi.as_view(), name="quote-cancel"),
    path("trades/", views.TradeListApi.as_view(), name="trades"),
    path("trades/<str:trade_id>/", views.TradeDetailApi.as_view(), name="trade"),
    path("events/", views.EventsApi.as_view(), name="events"),
    path("events/stream/", stream.EventStreamApi.as_view(), name="events-stream"),
    # The contract, readable without a certificate on the portal too (keyline/urls.py).
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="api:schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
]
