"""The admin HTTP app (REST now; dashboard and metrics come with the admin issue)."""
