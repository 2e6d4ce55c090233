"""An existing Flask app: a shop's order list with Flask-Login sessions and
its own pages. Real-time notifications are added with notifier in the lines
marked ``# notifier`` (README.md, "Add real-time to an existing Flask app").

    pip install notifier flask-login    # from a checkout: pip install . flask-login
    gunicorn -k gevent -w 1 examples.orders.app:app

Log in as alice in one browser and as bob in another; bob marks alice's order
shipped and alice's page says so at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, abort, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user

from notifier import Identity, Notifier  # notifier

app = Flask(__name__)
app.secret_key = "change-me: the example's session key " + "x" * 16
login_manager = LoginManager(app)
login_manager.login_view = "login"
notifier = Notifier(app, url_prefix="/realtime")  # notifier


@notifier.identity_loader  # notifier
def streaming_user() -> Identity | None:  # notifier
    return Identity(current_user.id) if current_user.is_authenticated else None  # notifier


class User(UserMixin):
    def __init__(self, user_id: str):
        self.id = user_id


@dataclass
class Order:
    id: int
    owner: str
    item: str
    shipped: bool = False


ORDERS = {1: Order(1, "alice", "Teapot"), 2: Order(2, "alice", "Two cups"), 3: Order(3, "bob", "Kettle")}


@login_manager.user_loader
def load_user(user_id: str) -> User:
    return User(user_id)


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        login_user(User(request.form["user"].strip() or "alice"))
        return redirect(url_for("orders"))
    return render_template("login.html")


@app.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("login"))


@app.get("/")
@login_required
def orders():
    return render_template("orders.html", orders=ORDERS.values(), user=current_user.id)


@app.post("/orders/<int:order_id>/ship")
@login_required
def ship(order_id: int):
    order = ORDERS.get(order_id) or abort(404)
    order.shipped = True
    notifier.notify(order.owner, f"Your order {order.id} ({order.item}) has shipped", type="order.shipped",  # notifier
                    data={"order": order.id}, after_request=True)  # notifier
    return redirect(url_for("orders"))
