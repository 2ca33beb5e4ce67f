"""Instruments are managed here; RFQs, quotes and trades are read-only records of what
traders did (they change only through the API's services)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from rfq.models import Instrument, Quote, Rfq, Trade


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = (
        "symbol",
        "kind",
        "underlying",
        "expiry",
        "strike",
        "option_type",
        "tick_size",
        "min_size",
        "is_active",
    )
    list_filter = ("kind", "underlying", "is_active")
    search_fields = ("symbol",)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rfq)
class RfqAdmin(ReadOnlyAdmin):
    list_display = ("id", "firm", "requester", "quantity", "state", "created_at", "expires_at")
    list_filter = ("state",)
    search_fields = ("id", "client_rfq_id", "firm__lei", "requester__trader_id")


@admin.register(Quote)
class QuoteAdmin(ReadOnlyAdmin):
    list_display = ("id", "rfq", "firm", "bid_price", "ask_price", "state", "expires_at")
    list_filter = ("state",)
    search_fields = ("id", "rfq__id", "firm__lei")


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "rfq",
        "requester_firm",
        "maker_firm",
        "side",
        "quantity",
        "price",
        "created_at",
    )
    search_fields = ("id", "rfq__id")
