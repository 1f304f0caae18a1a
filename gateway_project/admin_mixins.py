"""Admin pieces shared by the apps."""


class ReadOnlyAdminMixin:
    """For derived or append-only tables: listed and viewed in admin, never added, edited or deleted there."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
